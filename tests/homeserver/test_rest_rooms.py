"""REST: rooms, lifecycle, membership, power and the ScaiGrid members routes (CONTRACT 6)."""

from __future__ import annotations

from typing import Any

from tests.support import Api, User, envelope_error, envelope_ok


async def expect(
    api: Api,
    method: str,
    path: str,
    user: User | None,
    status: int,
    code: str,
    json: Any = None,
) -> dict[str, Any]:
    r = await api.call(method, path, user, json=json)
    return envelope_error(r, status, code)


async def members_of(api: Api, user: User, room: str) -> dict[str, dict[str, Any]]:
    data = await api.ok("GET", f"/v1/rooms/{room}/members", user)
    return {m["participant_id"]: m for m in data["items"]}


async def set_power(api: Api, user: User, room: str, target: User, level: int) -> Any:
    return await api.ok(
        "PUT",
        f"/v1/rooms/{room}/members/{target.participant_id}/power",
        user,
        json={"power_level": level},
    )


# -- create -------------------------------------------------------------------


async def test_create_scaiwave_form(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/rooms",
        alice,
        json={"room_type": "group", "name": "Team", "topic": "Daily things", "is_public": False},
    )
    room = envelope_ok(r, 201)
    assert room["id"].startswith("room-")
    assert room["room_id"] == room["id"]
    assert room["room_type"] == "group"
    assert room["name"] == "Team"
    assert room["topic"] == "Daily things"
    assert room["description"] == "Daily things"
    assert room["is_public"] is False
    assert room["creator_id"] == alice.participant_id
    assert room["state"] == "open"
    assert room["member_count"] == 1
    assert room["power_levels"] == {
        "events_default": 0,
        "redact_other": 50,
        "kick": 50,
        "ban": 50,
        "invite": 0,
        "state_default": 50,
        "send_on_behalf": 100,
        "close": 100,
        "power_levels": 100,
    }
    members = await members_of(api, alice, room["id"])
    assert members[alice.participant_id]["power_level"] == 100
    assert members[alice.participant_id]["role"] == "owner"


async def test_create_public_room_type_defaults_public(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.ok("POST", "/v1/rooms", alice, status=201, json={"room_type": "public"})
    assert room["room_type"] == "public"
    assert room["is_public"] is True


async def test_create_scaigrid_form(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    r = await api.call(
        "POST",
        "/v1/rooms",
        alice,
        json={
            "name": "Grid",
            "description": "A ScaiGrid room",
            "initial_members": [
                {"type": "user", "id": bob.participant_id},
                {"type": "user", "id": carol.participant_id},
            ],
        },
    )
    room = envelope_ok(r, 201)
    assert room["name"] == "Grid"
    assert room["description"] == "A ScaiGrid room"
    assert room["topic"] == "A ScaiGrid room"
    assert room["room_type"] == "group"
    assert room["is_public"] is False
    assert room["member_count"] == 3
    members = await members_of(api, bob, room["id"])
    assert set(members) == {alice.participant_id, bob.participant_id, carol.participant_id}
    assert members[alice.participant_id]["power_level"] == 100
    assert members[bob.participant_id]["power_level"] == 0
    assert members[bob.participant_id]["role"] == "member"
    assert members[carol.participant_id]["membership"] == "join"
    # initial members see the room in their list
    assert [x["id"] for x in (await api.ok("GET", "/v1/rooms", carol))["items"]] == [room["id"]]


async def test_create_validation(api: Api) -> None:
    alice = await api.register("alice")
    cases: list[tuple[Any, str]] = [
        ({"room_type": "castle"}, "room_type"),
        ({"name": 5}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"topic": ["t"]}, "topic"),
        ({"is_public": "yes"}, "is_public"),
        ({"initial_members": "bob"}, "initial_members"),
        ({"initial_members": ["bob"]}, "initial_members[0]"),
        ({"initial_members": [{"type": "user"}]}, "id"),
        ({"initial_members": [{"type": "user", "id": "bad id!"}]}, "id"),
    ]
    for body, field in cases:
        error = await expect(api, "POST", "/v1/rooms", alice, 400, "SW_INVALID_PARAM", body)
        assert field in error["message"], (body, error)
    await expect(
        api,
        "POST",
        "/v1/rooms",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"initial_members": [{"type": "user", "id": "p-doesnotexist"}]},
    )
    assert (await api.ok("GET", "/v1/rooms", alice))["items"] == []


# -- list / get / patch --------------------------------------------------------


async def test_list_only_my_rooms(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    a1 = await api.room(alice, name="a1")
    a2 = await api.room(alice, bob, name="a2")
    b1 = await api.room(bob, name="b1")
    r = await api.call("GET", "/v1/rooms", alice)
    data = envelope_ok(r, 200)
    assert sorted(x["id"] for x in data["items"]) == sorted([a1, a2])
    meta = r.json()["meta"]
    assert meta["has_more"] is False
    bobs = await api.ok("GET", "/v1/rooms", bob)
    assert sorted(x["id"] for x in bobs["items"]) == sorted([a2, b1])


async def test_list_rooms_pages(api: Api) -> None:
    alice = await api.register("alice")
    made = {await api.room(alice, name=f"r{i}") for i in range(5)}
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        path = "/v1/rooms?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = await api.call("GET", path, alice)
        data = envelope_ok(r, 200)
        seen += [x["id"] for x in data["items"]]
        meta = r.json()["meta"]
        if not meta["has_more"]:
            break
        cursor = meta["next_cursor"]
    assert len(seen) == 5
    assert set(seen) == made


async def test_get_room_with_members_and_recent_messages(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob, name="Detail")
    sent = [await api.send(alice, room, f"m{i}") for i in range(3)]
    data = await api.ok("GET", f"/v1/rooms/{room}", bob)
    assert data["id"] == room
    assert data["name"] == "Detail"
    ids = {m["participant_id"]: m for m in data["members"]}
    assert set(ids) == {alice.participant_id, bob.participant_id}
    assert ids[alice.participant_id]["power_level"] == 100
    assert ids[bob.participant_id]["participant"]["username"] == "bob"
    recent_ids = [e["id"] for e in data["recent_messages"]]
    for event in sent:
        assert event["id"] in recent_ids
    # newest first
    assert recent_ids[0] == sent[-1]["id"]


async def test_get_unknown_room(api: Api) -> None:
    alice = await api.register("alice")
    await expect(api, "GET", "/v1/rooms/room-nope", alice, 404, "SW_ROOM_NOT_FOUND")


async def test_patch_room(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob, name="Before")
    data = await api.ok(
        "PATCH",
        f"/v1/rooms/{room}",
        alice,
        json={"name": "After", "description": "new topic", "is_public": True},
    )
    assert data["name"] == "After"
    assert data["topic"] == "new topic"
    assert data["description"] == "new topic"
    assert data["is_public"] is True
    assert (await api.ok("GET", f"/v1/rooms/{room}", bob))["name"] == "After"
    # a power-0 member may not
    await expect(api, "PATCH", f"/v1/rooms/{room}", bob, 403, "SW_ROOM_FORBIDDEN", {"name": "x"})
    error = await expect(
        api, "PATCH", f"/v1/rooms/{room}", alice, 400, "SW_INVALID_PARAM", {"is_public": 1}
    )
    assert "is_public" in error["message"]
    # the change is in the timeline as a name event
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?limit=10", bob)
    names = [e for e in page["items"] if e["type"] == "swp.room.name"]
    assert names
    assert names[0]["content"] == {"name": "After"}


async def test_directory_lists_public_rooms_only(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    pub = await api.ok(
        "POST", "/v1/rooms", alice, status=201, json={"name": "Open lounge", "is_public": True}
    )
    await api.ok(
        "POST", "/v1/rooms", alice, status=201, json={"name": "Secret", "is_public": False}
    )
    closed = await api.ok(
        "POST", "/v1/rooms", alice, status=201, json={"name": "Closed pub", "is_public": True}
    )
    await api.ok("POST", f"/v1/rooms/{closed['id']}/close", alice)
    r = await api.call("GET", "/v1/directory/rooms", bob)
    data = envelope_ok(r, 200)
    assert [x["id"] for x in data["items"]] == [pub["id"]]
    assert "Secret" not in r.text
    found = await api.ok("GET", "/v1/directory/rooms?q=lounge", bob)
    assert [x["id"] for x in found["items"]] == [pub["id"]]
    assert (await api.ok("GET", "/v1/directory/rooms?q=nothing", bob))["items"] == []
    await expect(api, "GET", "/v1/directory/rooms", None, 401, "SW_AUTH_INVALID_TOKEN")


async def test_dm_is_idempotent(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    r = await api.call("POST", "/v1/rooms/dm", alice, json={"participant_id": bob.participant_id})
    first = envelope_ok(r, 201)
    assert first["room_type"] == "dm"
    assert first["member_count"] == 2
    r = await api.call("POST", "/v1/rooms/dm", alice, json={"participant_id": bob.participant_id})
    second = envelope_ok(r, 200)
    assert second["id"] == first["id"]
    r = await api.call("POST", "/v1/rooms/dm", bob, json={"participant_id": alice.participant_id})
    assert envelope_ok(r, 200)["id"] == first["id"]
    members = await members_of(api, bob, first["id"])
    assert set(members) == {alice.participant_id, bob.participant_id}


async def test_dm_validation(api: Api) -> None:
    alice = await api.register("alice")
    await expect(api, "POST", "/v1/rooms/dm", alice, 400, "SW_INVALID_PARAM", {})
    await expect(
        api,
        "POST",
        "/v1/rooms/dm",
        alice,
        400,
        "SW_INVALID_PARAM",
        {"participant_id": alice.participant_id},
    )
    await expect(
        api,
        "POST",
        "/v1/rooms/dm",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"participant_id": "p-nobody"},
    )


# -- join / invite / leave ---------------------------------------------------


async def test_join_public_room(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, is_public=True)
    data = await api.ok("POST", f"/v1/rooms/{room}/join", bob)
    assert data == {"room_id": room, "membership": "join"}
    assert bob.participant_id in await members_of(api, alice, room)
    # joining twice is a no-op
    await api.ok("POST", f"/v1/rooms/{room}/join", bob)
    await api.send(bob, room, "hello")


async def test_join_private_room_needs_invite(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice)
    await expect(api, "POST", f"/v1/rooms/{room}/join", bob, 403, "SW_ROOM_FORBIDDEN")
    await expect(api, "POST", "/v1/rooms/room-missing/join", bob, 404, "SW_ROOM_NOT_FOUND")
    data = await api.ok(
        "POST", f"/v1/rooms/{room}/invite", alice, json={"participant_id": bob.participant_id}
    )
    assert data["membership"] == "invite"
    # invited is not joined yet
    await expect(api, "GET", f"/v1/rooms/{room}/messages", bob, 403, "SW_NOT_MEMBER")
    await api.ok("POST", f"/v1/rooms/{room}/join", bob)
    assert (await members_of(api, bob, room))[bob.participant_id]["membership"] == "join"


async def test_invite_validation_and_permission(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice)
    await expect(api, "POST", f"/v1/rooms/{room}/invite", alice, 400, "SW_INVALID_PARAM", {})
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/invite",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"participant_id": "p-ghost"},
    )
    # a non-member cannot invite
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/invite",
        bob,
        403,
        "SW_NOT_MEMBER",
        {"participant_id": carol.participant_id},
    )


async def test_leave(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    data = await api.ok("POST", f"/v1/rooms/{room}/leave", bob)
    assert data == {"room_id": room, "membership": "leave"}
    assert bob.participant_id not in await members_of(api, alice, room)
    assert (await api.ok("GET", "/v1/rooms", bob))["items"] == []
    await expect(
        api, "POST", f"/v1/rooms/{room}/send", bob, 403, "SW_NOT_MEMBER", {"content": {"body": "x"}}
    )
    await expect(api, "POST", f"/v1/rooms/{room}/leave", bob, 403, "SW_NOT_MEMBER")
    # a private room cannot be re-entered without a new invite
    await expect(api, "POST", f"/v1/rooms/{room}/join", bob, 403, "SW_ROOM_FORBIDDEN")


# -- kick / ban / unban --------------------------------------------------------


async def test_kick_matrix_rules(api: Api) -> None:
    alice = await api.register("alice")
    mod = await api.register("mod")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, mod, bob, carol)
    await set_power(api, alice, room, mod, 50)
    path = f"/v1/rooms/{room}/kick"
    # a power-0 member cannot kick
    await expect(
        api, "POST", path, bob, 403, "SW_ROOM_FORBIDDEN", {"participant_id": carol.participant_id}
    )
    # a moderator cannot kick the owner
    await expect(
        api, "POST", path, mod, 403, "SW_ROOM_FORBIDDEN", {"participant_id": alice.participant_id}
    )
    # a moderator can kick a member
    data = await api.ok(
        "POST", path, mod, json={"participant_id": bob.participant_id, "reason": "spam"}
    )
    assert data["membership"] == "leave"
    assert bob.participant_id not in await members_of(api, alice, room)
    await expect(api, "GET", f"/v1/rooms/{room}", bob, 403, "SW_NOT_MEMBER")
    # kicking someone who is not in the room
    await expect(
        api,
        "POST",
        path,
        mod,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"participant_id": bob.participant_id},
    )
    # the owner can kick the moderator
    await api.ok("POST", path, alice, json={"participant_id": mod.participant_id})
    # the kick is recorded with its reason
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?limit=50", alice)
    kicks = [
        e["content"]
        for e in page["items"]
        if e["type"] == "swp.room.member" and e["content"].get("reason") == "spam"
    ]
    assert kicks == [
        {
            "participant_id": bob.participant_id,
            "membership": "leave",
            "changed_by": mod.participant_id,
            "reason": "spam",
        }
    ]


async def test_moderators_cannot_kick_each_other(api: Api) -> None:
    alice = await api.register("alice")
    m1 = await api.register("m1")
    m2 = await api.register("m2")
    room = await api.room(alice, m1, m2)
    await set_power(api, alice, room, m1, 50)
    await set_power(api, alice, room, m2, 50)
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/kick",
        m1,
        403,
        "SW_ROOM_FORBIDDEN",
        {"participant_id": m2.participant_id},
    )
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/ban",
        m1,
        403,
        "SW_ROOM_FORBIDDEN",
        {"participant_id": m2.participant_id},
    )


async def test_ban_and_unban(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob, carol, is_public=True)
    # a power-0 member cannot ban
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/ban",
        carol,
        403,
        "SW_ROOM_FORBIDDEN",
        {"participant_id": bob.participant_id},
    )
    data = await api.ok(
        "POST", f"/v1/rooms/{room}/ban", alice, json={"participant_id": bob.participant_id}
    )
    assert data["membership"] == "ban"
    # banned: cannot rejoin the public room, cannot read
    await expect(api, "POST", f"/v1/rooms/{room}/join", bob, 403, "SW_ROOM_FORBIDDEN")
    await expect(api, "GET", f"/v1/rooms/{room}/messages", bob, 403, "SW_NOT_MEMBER")
    # cannot be invited or added back while banned
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/invite",
        alice,
        403,
        "SW_ROOM_FORBIDDEN",
        {"participant_id": bob.participant_id},
    )
    # banning again is a no-op
    await api.ok(
        "POST", f"/v1/rooms/{room}/ban", alice, json={"participant_id": bob.participant_id}
    )
    # a power-0 member cannot unban
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/unban",
        carol,
        403,
        "SW_ROOM_FORBIDDEN",
        {"participant_id": bob.participant_id},
    )
    data = await api.ok(
        "POST", f"/v1/rooms/{room}/unban", alice, json={"participant_id": bob.participant_id}
    )
    assert data["membership"] == "leave"
    # unbanning someone not banned
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/unban",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"participant_id": bob.participant_id},
    )
    await api.ok("POST", f"/v1/rooms/{room}/join", bob)
    await api.send(bob, room, "back again")


async def test_ban_non_member_preemptively(api: Api) -> None:
    alice = await api.register("alice")
    eve = await api.register("eve")
    room = await api.room(alice, is_public=True)
    await api.ok(
        "POST", f"/v1/rooms/{room}/ban", alice, json={"participant_id": eve.participant_id}
    )
    await expect(api, "POST", f"/v1/rooms/{room}/join", eve, 403, "SW_ROOM_FORBIDDEN")
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/ban",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"participant_id": "p-ghost"},
    )


# -- close / archive -------------------------------------------------------------


async def test_close_freezes_writes(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    await api.send(alice, room, "before close")
    # a power-0 member cannot close
    await expect(api, "POST", f"/v1/rooms/{room}/close", bob, 403, "SW_ROOM_FORBIDDEN")
    data = await api.ok("POST", f"/v1/rooms/{room}/close", alice)
    assert data["state"] == "closed"
    body = {"content": {"msgtype": "swp.text", "body": "after"}}
    await expect(api, "POST", f"/v1/rooms/{room}/send", alice, 409, "SW_ROOM_FROZEN", body)
    await expect(api, "POST", f"/v1/rooms/{room}/send", bob, 409, "SW_ROOM_FROZEN", body)
    await expect(api, "PUT", f"/v1/rooms/{room}/name", alice, 409, "SW_ROOM_FROZEN", {"name": "x"})
    await expect(
        api, "PUT", f"/v1/rooms/{room}/topic", alice, 409, "SW_ROOM_FROZEN", {"topic": "x"}
    )
    await expect(api, "PATCH", f"/v1/rooms/{room}", alice, 409, "SW_ROOM_FROZEN", {"name": "x"})
    carol = await api.register("carol")
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/invite",
        alice,
        409,
        "SW_ROOM_FROZEN",
        {"participant_id": carol.participant_id},
    )
    # reads still work
    page = await api.ok("GET", f"/v1/rooms/{room}/messages", bob)
    bodies = [e["content"].get("body") for e in page["items"]]
    assert "before close" in bodies
    assert "after" not in bodies
    # closed is terminal: it cannot be archived afterwards; closing again is a no-op
    await expect(api, "POST", f"/v1/rooms/{room}/archive", alice, 409, "SW_ROOM_FROZEN")
    assert (await api.ok("POST", f"/v1/rooms/{room}/close", alice))["state"] == "closed"


async def test_archive_via_delete(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    await expect(api, "DELETE", f"/v1/rooms/{room}", bob, 403, "SW_ROOM_FORBIDDEN")
    data = await api.ok("DELETE", f"/v1/rooms/{room}", alice)
    assert data["state"] == "archived"
    assert (await api.ok("GET", f"/v1/rooms/{room}", alice))["state"] == "archived"
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/send",
        bob,
        409,
        "SW_ROOM_FROZEN",
        {"content": {"body": "x"}},
    )
    r = await api.call("POST", f"/v1/rooms/{room}/messages", bob, json={"content": "scaigrid form"})
    envelope_error(r, 409, "SW_ROOM_FROZEN")
    await expect(api, "DELETE", "/v1/rooms/room-missing", alice, 404, "SW_ROOM_NOT_FOUND")


async def test_archive_endpoint(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    assert (await api.ok("POST", f"/v1/rooms/{room}/archive", alice))["state"] == "archived"
    await expect(api, "PUT", f"/v1/rooms/{room}/name", alice, 409, "SW_ROOM_FROZEN", {"name": "x"})


# -- name / topic --------------------------------------------------------------


async def test_name_and_topic_need_state_power(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob, name="Orig")
    await expect(
        api, "PUT", f"/v1/rooms/{room}/name", bob, 403, "SW_ROOM_FORBIDDEN", {"name": "Bob's"}
    )
    await expect(
        api, "PUT", f"/v1/rooms/{room}/topic", bob, 403, "SW_ROOM_FORBIDDEN", {"topic": "Bob's"}
    )
    assert (await api.ok("GET", f"/v1/rooms/{room}", bob))["name"] == "Orig"
    await set_power(api, alice, room, bob, 50)
    data = await api.ok("PUT", f"/v1/rooms/{room}/name", bob, json={"name": "Bob's"})
    assert data["name"] == "Bob's"
    data = await api.ok("PUT", f"/v1/rooms/{room}/topic", bob, json={"topic": "T"})
    assert data["topic"] == "T"
    assert data["description"] == "T"
    error = await expect(
        api, "PUT", f"/v1/rooms/{room}/name", alice, 400, "SW_INVALID_PARAM", {"name": 12}
    )
    assert "name" in error["message"]
    error = await expect(
        api, "PUT", f"/v1/rooms/{room}/topic", alice, 400, "SW_INVALID_PARAM", {"topic": "t" * 5000}
    )
    assert "topic" in error["message"]


# -- power ---------------------------------------------------------------------


async def test_power_changes(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob, carol)
    data = await set_power(api, alice, room, bob, 50)
    assert data["participant_id"] == bob.participant_id
    assert data["power_level"] == 50
    assert data["role"] == "moderator"
    path = f"/v1/rooms/{room}/members/{carol.participant_id}/power"
    # a moderator is below the power_levels threshold (100)
    await expect(api, "PUT", path, bob, 403, "SW_ROOM_FORBIDDEN", {"power_level": 10})
    await expect(api, "PUT", path, bob, 403, "SW_ROOM_FORBIDDEN", {"power_level": 100})
    # a power-0 member cannot raise themselves
    own = f"/v1/rooms/{room}/members/{carol.participant_id}/power"
    await expect(api, "PUT", own, carol, 403, "SW_ROOM_FORBIDDEN", {"power_level": 50})
    # make carol an owner; then alice cannot change carol (at her own level)
    await set_power(api, alice, room, carol, 100)
    await expect(api, "PUT", path, alice, 403, "SW_ROOM_FORBIDDEN", {"power_level": 0})
    # and carol cannot demote alice
    await expect(
        api,
        "PUT",
        f"/v1/rooms/{room}/members/{alice.participant_id}/power",
        carol,
        403,
        "SW_ROOM_FORBIDDEN",
        {"power_level": 0},
    )
    # self-demotion is allowed
    data = await set_power(api, carol, room, carol, 10)
    assert data["power_level"] == 10
    members = await members_of(api, alice, room)
    assert members[carol.participant_id]["power_level"] == 10
    assert members[alice.participant_id]["power_level"] == 100
    # the change is a power_levels event
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?limit=5", alice)
    latest = page["items"][0]
    assert latest["type"] == "swp.room.power_levels"
    assert latest["content"]["participant_id"] == carol.participant_id
    assert latest["content"]["power_level"] == 10
    assert latest["content"]["previous_power_level"] == 100


async def test_self_demoted_owner_cannot_regain(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    await set_power(api, alice, room, alice, 50)
    await expect(
        api,
        "PUT",
        f"/v1/rooms/{room}/members/{alice.participant_id}/power",
        alice,
        403,
        "SW_ROOM_FORBIDDEN",
        {"power_level": 100},
    )


async def test_power_validation(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    path = f"/v1/rooms/{room}/members/{bob.participant_id}/power"
    for value in (-1, 101, 1000, "50", 50.5, True, None):
        error = await expect(
            api, "PUT", path, alice, 400, "SW_INVALID_PARAM", {"power_level": value}
        )
        assert "power_level" in error["message"]
    await expect(api, "PUT", path, alice, 400, "SW_INVALID_PARAM", {})
    # boundaries are accepted
    assert (await set_power(api, alice, room, bob, 0))["power_level"] == 0
    assert (await set_power(api, alice, room, bob, 100))["power_level"] == 100
    # not a member
    carol = await api.register("carol")
    await expect(
        api,
        "PUT",
        f"/v1/rooms/{room}/members/{carol.participant_id}/power",
        alice,
        404,
        "SW_PARTICIPANT_NOT_FOUND",
        {"power_level": 10},
    )


# -- ScaiGrid members routes --------------------------------------------------


async def test_scaigrid_members_list(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    r = await api.call("GET", f"/v1/rooms/{room}/members", bob)
    data = envelope_ok(r, 200)
    assert r.json()["meta"]["total"] == 2
    by_id = {m["id"]: m for m in data["items"]}
    assert by_id[alice.participant_id]["role"] == "owner"
    assert by_id[bob.participant_id]["role"] == "member"
    assert by_id[bob.participant_id]["type"] == "user"


async def test_scaigrid_members_add_and_remove(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice)
    r = await api.call(
        "POST", f"/v1/rooms/{room}/members", alice, json={"type": "user", "id": bob.participant_id}
    )
    added = envelope_ok(r, 201)
    assert added["participant_id"] == bob.participant_id
    assert added["role"] == "member"
    assert added["membership"] == "join"
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/members",
        alice,
        json={"type": "user", "id": carol.participant_id, "role": "owner"},
    )
    assert envelope_ok(r, 201)["power_level"] == 100
    # a member cannot hand out a role above their own
    dave = await api.register("dave")
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/members",
        bob,
        json={"type": "user", "id": dave.participant_id, "role": "owner"},
    )
    envelope_error(r, 403, "ROOM_ACCESS_DENIED")
    # remove
    r = await api.call("DELETE", f"/v1/rooms/{room}/members/{bob.participant_id}", alice)
    data = envelope_ok(r, 200)
    assert data == {"room_id": room, "participant_id": bob.participant_id, "removed": True}
    assert bob.participant_id not in await members_of(api, alice, room)
    # removing again: not a member
    r = await api.call("DELETE", f"/v1/rooms/{room}/members/{bob.participant_id}", alice)
    envelope_error(r, 404, "ROOM_MEMBER_NOT_FOUND")
    # a power-0 member cannot remove others
    r = await api.call(
        "POST", f"/v1/rooms/{room}/members", alice, json={"type": "user", "id": dave.participant_id}
    )
    envelope_ok(r, 201)
    r = await api.call("DELETE", f"/v1/rooms/{room}/members/{alice.participant_id}", dave)
    envelope_error(r, 403, "ROOM_ACCESS_DENIED")
    # removing yourself is leaving
    r = await api.call("DELETE", f"/v1/rooms/{room}/members/{dave.participant_id}", dave)
    envelope_ok(r, 200)
    assert dave.participant_id not in await members_of(api, alice, room)


async def test_scaigrid_members_codes(api: Api) -> None:
    alice = await api.register("alice")
    eve = await api.register("eve")
    room = await api.room(alice, name="Eve must not see this")
    # a non-member gets ROOM_NOT_FOUND on every members route
    for method, path, body in (
        ("GET", f"/v1/rooms/{room}/members", None),
        ("POST", f"/v1/rooms/{room}/members", {"type": "user", "id": eve.participant_id}),
        ("DELETE", f"/v1/rooms/{room}/members/{alice.participant_id}", None),
    ):
        r = await api.call(method, path, eve, json=body)
        envelope_error(r, 404, "ROOM_NOT_FOUND")
        assert "Eve must not see this" not in r.text
        assert alice.participant_id not in r.text
    r = await api.call("GET", "/v1/rooms/room-missing/members", alice)
    envelope_error(r, 404, "ROOM_NOT_FOUND")
    # validation is 422 VALIDATION_ERROR naming the field
    cases: list[tuple[Any, str]] = [
        ({}, "id"),
        ({"type": "user", "id": 5}, "id"),
        ({"type": "user", "id": "bad id!"}, "id"),
        ({"type": "user", "id": eve.participant_id, "role": "emperor"}, "role"),
        ({"type": "user", "id": eve.participant_id, "role": 1}, "role"),
    ]
    for body, field in cases:
        r = await api.call("POST", f"/v1/rooms/{room}/members", alice, json=body)
        error = envelope_error(r, 422, "VALIDATION_ERROR")
        assert field in error["message"], (body, error)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/members",
        alice,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    envelope_error(r, 422, "VALIDATION_ERROR")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/members", alice, json={"type": "user", "id": "p-ghost"}
    )
    envelope_error(r, 404, "ROOM_MEMBER_NOT_FOUND")
    assert set(await members_of(api, alice, room)) == {alice.participant_id}


async def test_viewer_reads_but_cannot_send(api: Api) -> None:
    alice = await api.register("alice")
    vic = await api.register("vic")
    room = await api.room(alice)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/members",
        alice,
        json={"type": "user", "id": vic.participant_id, "role": "viewer"},
    )
    added = envelope_ok(r, 201)
    assert added["role"] == "viewer"
    assert added["read_only"] is True
    sent = await api.send(alice, room, "for viewers")
    page = await api.ok("GET", f"/v1/rooms/{room}/messages", vic)
    assert sent["id"] in [e["id"] for e in page["items"]]
    assert (await api.ok("GET", f"/v1/rooms/{room}", vic))["id"] == room
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/send",
        vic,
        403,
        "SW_ROOM_FORBIDDEN",
        {"content": {"msgtype": "swp.text", "body": "nope"}},
    )
    r = await api.call("POST", f"/v1/rooms/{room}/messages", vic, json={"content": "nope"})
    envelope_error(r, 403, "ROOM_ACCESS_DENIED")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages/{sent['id']}/reply", vic, json={"content": "nope"}
    )
    envelope_error(r, 403, "ROOM_ACCESS_DENIED")
    # a viewer cannot add members either
    bob = await api.register("bob")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/members", vic, json={"type": "user", "id": bob.participant_id}
    )
    envelope_error(r, 403, "ROOM_ACCESS_DENIED")
    page = await api.ok("GET", f"/v1/rooms/{room}/messages", alice)
    assert "nope" not in [e["content"].get("body") for e in page["items"]]


async def test_viewer_via_initial_members(api: Api) -> None:
    alice = await api.register("alice")
    vic = await api.register("vic")
    data = await api.ok(
        "POST",
        "/v1/rooms",
        alice,
        status=201,
        json={
            "name": "v",
            "initial_members": [{"type": "user", "id": vic.participant_id, "role": "viewer"}],
        },
    )
    room = data["id"]
    assert (await members_of(api, vic, room))[vic.participant_id]["role"] == "viewer"
    await expect(
        api,
        "POST",
        f"/v1/rooms/{room}/send",
        vic,
        403,
        "SW_ROOM_FORBIDDEN",
        {"content": {"body": "x"}},
    )


async def test_frozen_room_is_not_revealed_to_non_members(api: Api) -> None:
    alice, eve = await api.register("alice"), await api.register("eve")
    room = await api.room(alice)
    sent = await api.send(alice, room, "before closing")
    await api.ok("POST", f"/v1/rooms/{room}/close", alice)
    # A member is told the room is frozen ...
    r = await api.call("POST", f"/v1/rooms/{room}/send", alice, json={"content": {"body": "x"}})
    envelope_error(r, 409, "SW_ROOM_FROZEN")
    # ... a non-member only that they are not a member, on every write path.
    for method, path, body in (
        ("POST", f"/v1/rooms/{room}/send", {"content": {"body": "x"}}),
        ("PUT", f"/v1/rooms/{room}/name", {"name": "x"}),
        ("POST", f"/v1/rooms/{room}/invite", {"participant_id": eve.participant_id}),
        ("POST", f"/v1/rooms/{room}/events/{sent['id']}/edit", {"content": {"body": "x"}}),
        ("POST", f"/v1/rooms/{room}/events/{sent['id']}/react", {"emoji": "x"}),
        ("PUT", f"/v1/rooms/{room}/ai/engagement", {"mode": "always"}),
    ):
        r = await api.call(method, path, eve, json=body)
        envelope_error(r, 403, "SW_NOT_MEMBER")
