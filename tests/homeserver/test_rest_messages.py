"""REST: send, history paging, ScaiGrid message forms, idempotency, on-behalf,
rate limits (CONTRACT 4 event shape, 7) and the no-leak rule for non-members (6)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from tests.support import (
    EVENT_FIELDS,
    ISO_MS,
    Api,
    User,
    api_for,
    envelope_error,
    envelope_ok,
    make_settings,
    start_server,
)


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "swp.text", "body": body, **extra}


async def send_raw(api: Api, user: User, room: str, **body: Any) -> httpx.Response:
    return await api.call("POST", f"/v1/rooms/{room}/send", user, json=body)


async def history(api: Api, user: User, room: str, query: str = "") -> tuple[list[Any], Any]:
    r = await api.call("GET", f"/v1/rooms/{room}/messages{query}", user)
    data = envelope_ok(r, 200)
    return data["items"], r.json()["meta"]


async def all_events(api: Api, user: User, room: str) -> list[Any]:
    items, _ = await history(api, user, room, "?direction=forward&limit=200")
    return items


def bodies(events: list[Any]) -> list[Any]:
    return [e["content"].get("body") for e in events if e["type"] == "swp.room.message"]


# -- send ----------------------------------------------------------------------


async def test_send_returns_full_event(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    before, _ = await history(api, alice, room, "?limit=1")
    r = await send_raw(api, alice, room, content=text("hello", extra={"k": [1, 2]}))
    event = envelope_ok(r, 200)
    assert set(event) >= EVENT_FIELDS
    assert event["type"] == "swp.room.message"
    assert event["id"].startswith("evt-")
    assert event["room_id"] == room
    assert event["tenant_id"] == "ten_default"
    assert event["sender_id"] == alice.participant_id
    assert event["actor_id"] == alice.participant_id
    assert event["content"] == text("hello", extra={"k": [1, 2]})
    assert isinstance(event["stream_position"], int)
    assert event["stream_position"] > before[0]["stream_position"]
    assert isinstance(event["origin_ts"], int)
    assert not isinstance(event["origin_ts"], bool)
    assert abs(event["origin_ts"] - time.time()) < 60
    assert ISO_MS.match(event["ts"]), event["ts"]
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event["origin_ts"])) == event["ts"][:19]
    assert event["depth"] == before[0]["depth"] + 1
    assert event["prev_event_ids"] == [before[0]["id"]]
    # the same event comes back from history, identical
    items, _ = await history(api, bob, room, "?limit=1")
    assert items == [event]
    # the next event chains onto it
    nxt = await api.send(bob, room, "second")
    assert nxt["prev_event_ids"] == [event["id"]]
    assert nxt["depth"] == event["depth"] + 1
    assert nxt["stream_position"] > event["stream_position"]


async def test_send_content_must_be_an_object(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    for content in ("hello", [1, 2], 5, True, None):
        r = await send_raw(api, alice, room, content=content)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert "content" in error["message"]
    r = await send_raw(api, alice, room)
    assert "content" in envelope_error(r, 400, "SW_INVALID_PARAM")["message"]
    r = await send_raw(api, alice, room, content={}, event_uuid=5)
    assert "event_uuid" in envelope_error(r, 400, "SW_INVALID_PARAM")["message"]
    r = await send_raw(api, alice, room, content={}, event_uuid="")
    assert "event_uuid" in envelope_error(r, 400, "SW_INVALID_PARAM")["message"]
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/send",
        alice,
        content=b'{"content": {',
        headers={"Content-Type": "application/json"},
    )
    envelope_error(r, 400, "SW_BAD_JSON")
    r = await api.call("POST", f"/v1/rooms/{room}/send", alice, json=[{"content": {}}])
    envelope_error(r, 400, "SW_BAD_JSON")
    assert bodies(await all_events(api, alice, room)) == []


async def test_send_empty_object_is_fine(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    event = envelope_ok(await send_raw(api, alice, room, content={}), 200)
    assert event["content"] == {}


async def test_content_size_boundary(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    overhead = len(orjson.dumps(text("")))
    exact = text("x" * (65536 - overhead))
    assert len(orjson.dumps(exact)) == 65536
    event = envelope_ok(await send_raw(api, alice, room, content=exact), 200)
    assert len(event["content"]["body"]) == 65536 - overhead
    over = text("x" * (65536 - overhead + 1))
    r = await send_raw(api, alice, room, content=over)
    error = envelope_error(r, 413, "SW_CONTENT_TOO_LARGE")
    assert "x" * 100 not in r.text  # the content is not echoed
    assert "content" in error["message"]
    # size is counted in UTF-8 bytes of compact JSON, not characters; white space in
    # the request body does not count
    two_byte = {"b": "\u00e9" * ((65536 - len(b'{"b":""}')) // 2)}
    assert len(orjson.dumps(two_byte)) == 65536
    raw = b'{ "content" :  ' + orjson.dumps(two_byte, option=orjson.OPT_INDENT_2) + b"  }"
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/send",
        alice,
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    envelope_ok(r, 200)
    two_byte["b"] += "a"
    envelope_error(await send_raw(api, alice, room, content=two_byte), 413, "SW_CONTENT_TOO_LARGE")
    # the ScaiGrid form applies the same byte limit (413 on every route family)
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages", alice, json={"content": "\u00e9" * 40_000}
    )
    envelope_error(r, 413, "SW_CONTENT_TOO_LARGE")
    assert len(bodies(await all_events(api, alice, room))) == 2


async def test_request_body_over_max_request_bytes_is_413(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    r = await send_raw(api, alice, room, content=text("y" * (1 << 20)))
    envelope_error(r, 413, "SW_CONTENT_TOO_LARGE")


async def test_send_to_unknown_room(api: Api) -> None:
    alice = await api.register("alice")
    r = await send_raw(api, alice, "room-missing", content=text("x"))
    envelope_error(r, 404, "SW_ROOM_NOT_FOUND")
    r = await api.call("GET", "/v1/rooms/room-missing/messages", alice)
    envelope_error(r, 404, "SW_ROOM_NOT_FOUND")


# -- history -------------------------------------------------------------------


async def test_history_paging_forward_and_back(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    # the room starts with its create and member events: 2 + 23 = 25 events
    for i in range(23):
        await api.send(alice, room, f"m{i:02d}")
    everything = await all_events(api, alice, room)
    assert len(everything) == 25
    positions = [e["stream_position"] for e in everything]
    assert positions == sorted(positions)
    assert len(set(positions)) == 25

    def walk(direction: str) -> Any:
        async def run() -> list[list[Any]]:
            pages: list[list[Any]] = []
            cursor: str | None = None
            while True:
                query = f"?limit=5&direction={direction}" + (f"&from={cursor}" if cursor else "")
                items, meta = await history(api, alice, room, query)
                pages.append(items)
                assert len(items) == 5
                assert meta["next_cursor"] == str(items[-1]["stream_position"])
                if not meta["has_more"]:
                    break
                cursor = meta["next_cursor"]
                assert len(pages) < 10
            # past the end: empty, no cursor, no more
            tail, tail_meta = await history(
                api, alice, room, f"?limit=5&direction={direction}&from={meta['next_cursor']}"
            )
            assert tail == []
            assert tail_meta["has_more"] is False
            assert tail_meta["next_cursor"] is None
            return pages

        return run()

    forward = await walk("forward")
    assert len(forward) == 5
    assert [e["id"] for page in forward for e in page] == [e["id"] for e in everything]
    back = await walk("back")
    assert len(back) == 5
    assert [e["id"] for page in back for e in page] == [e["id"] for e in reversed(everything)]
    # default direction is back, newest first
    items, meta = await history(api, alice, room, "?limit=3")
    assert [e["id"] for e in items] == [e["id"] for e in everything[-1:-4:-1]]
    assert meta["has_more"] is True
    # from is exclusive in both directions
    mid = everything[10]["stream_position"]
    items, _ = await history(api, alice, room, f"?limit=2&direction=forward&from={mid}")
    assert [e["id"] for e in items] == [everything[11]["id"], everything[12]["id"]]
    items, _ = await history(api, alice, room, f"?limit=2&direction=back&from={mid}")
    assert [e["id"] for e in items] == [everything[9]["id"], everything[8]["id"]]
    # Matrix-style dir=f/b is understood
    items, _ = await history(api, alice, room, "?limit=1&dir=f")
    assert items[0]["id"] == everything[0]["id"]
    # the default limit is 50
    items, meta = await history(api, alice, room)
    assert len(items) == 25
    assert meta["has_more"] is False


async def test_history_bad_params(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    cases = [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=1.5", "limit"),
        ("from=abc", "from"),
        ("from=-1", "from"),
        ("from=99999999999999999999999", "from"),
        ("direction=sideways", "direction"),
    ]
    for query, field in cases:
        r = await api.call("GET", f"/v1/rooms/{room}/messages?{query}", alice)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert field in error["message"], (query, error)


async def test_history_limit_clamps_to_200(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=0)
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        room = await api.room(alice)
        async with trio.open_nursery() as nursery:
            for i in range(205):
                nursery.start_soon(api.send, alice, room, f"m{i}")
        for query in ("?limit=201", "?limit=100000", "?limit=99999999999999999999999999"):
            items, meta = await history(api, alice, room, query)
            assert len(items) == 200, query
            assert meta["has_more"] is True
        items, meta = await history(api, alice, room, "?limit=200&direction=forward")
        rest, rest_meta = await history(
            api, alice, room, f"?limit=200&direction=forward&from={meta['next_cursor']}"
        )
        assert len(items) + len(rest) == 207
        assert rest_meta["has_more"] is False


# -- ScaiGrid message forms ------------------------------------------------------


async def test_scaigrid_post_message(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/messages",
        alice,
        json={
            "content": "hi @bob",
            "mention": [
                {"type": "user", "id": bob.participant_id},
                {"type": "user", "id": bob.participant_id},
            ],
            "attachments": [{"media_id": "med-1"}],
        },
    )
    event = envelope_ok(r, 201)
    assert set(event) >= EVENT_FIELDS
    assert event["type"] == "swp.room.message"
    assert event["sender_id"] == alice.participant_id
    assert event["content"] == {
        "msgtype": "swp.text",
        "body": "hi @bob",
        "mentions": [bob.participant_id],
        "attachments": [{"media_id": "med-1"}],
    }
    items, _ = await history(api, bob, room, "?limit=1")
    assert items == [event]
    # without mentions no key is added
    plain = await api.ok(
        "POST", f"/v1/rooms/{room}/messages", bob, status=201, json={"content": "plain"}
    )
    assert plain["content"] == {"msgtype": "swp.text", "body": "plain"}


async def test_scaigrid_post_message_validation(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    cases: list[tuple[Any, str]] = [
        ({}, "content"),
        ({"content": {"body": "x"}}, "content"),
        ({"content": ""}, "content"),
        ({"content": "x" * 60_001}, "content"),
        ({"content": "x", "mention": "bob"}, "mention"),
        ({"content": "x", "mention": ["bob"]}, "mention[0]"),
        ({"content": "x", "mention": [{"type": "user", "id": "bad id!"}]}, "mention[0].id"),
        ({"content": "x", "mention": [{"id": "p-abc"}]}, "mention[0].type"),
        ({"content": "x", "attachments": "file"}, "attachments"),
    ]
    for body, field in cases:
        r = await api.call("POST", f"/v1/rooms/{room}/messages", alice, json=body)
        error = envelope_error(r, 422, "VALIDATION_ERROR")
        assert field in error["message"], (body, error)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/messages",
        alice,
        content=b"nope",
        headers={"Content-Type": "application/json"},
    )
    envelope_error(r, 422, "VALIDATION_ERROR")
    r = await api.call("POST", "/v1/rooms/room-missing/messages", alice, json={"content": "x"})
    envelope_error(r, 404, "ROOM_NOT_FOUND")
    assert bodies(await all_events(api, alice, room)) == []


async def test_scaigrid_reply(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    other = await api.room(alice)
    parent = await api.send(alice, room, "question")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages/{parent['id']}/reply", bob, json={"content": "answer"}
    )
    reply = envelope_ok(r, 201)
    assert reply["content"] == {
        "msgtype": "swp.text",
        "body": "answer",
        "reply_to_event_id": parent["id"],
    }
    assert reply["sender_id"] == bob.participant_id
    # a missing parent, or a parent from another room, is ROOM_NOT_FOUND
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages/evt-missing/reply", bob, json={"content": "x"}
    )
    envelope_error(r, 404, "ROOM_NOT_FOUND")
    elsewhere = await api.send(alice, other, "elsewhere")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages/{elsewhere['id']}/reply", bob, json={"content": "x"}
    )
    envelope_error(r, 404, "ROOM_NOT_FOUND")
    assert bodies(await all_events(api, alice, room)) == ["question", "answer"]
    # ScaiWave /send takes reply_to_event_id as free content (not enforced as a tree)
    r = await send_raw(api, alice, room, content=text("loose", reply_to_event_id="evt-whatever"))
    assert envelope_ok(r, 200)["content"]["reply_to_event_id"] == "evt-whatever"


# -- idempotency ---------------------------------------------------------------


async def test_idempotent_send(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    r1 = await send_raw(api, alice, room, content=text("once"), event_uuid="uuid-1")
    r2 = await send_raw(api, alice, room, content=text("once"), event_uuid="uuid-1")
    first, second = envelope_ok(r1, 200), envelope_ok(r2, 200)
    assert first == second
    # a retry with different content still returns the stored event
    r3 = await send_raw(api, alice, room, content=text("changed"), event_uuid="uuid-1")
    assert envelope_ok(r3, 200) == first
    # the same uuid from another sender is another event
    theirs = envelope_ok(
        await send_raw(api, bob, room, content=text("once"), event_uuid="uuid-1"), 200
    )
    assert theirs["id"] != first["id"]
    assert bodies(await all_events(api, alice, room)) == ["once", "once"]


async def test_idempotent_scaigrid_post(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    body = {"content": "grid once", "event_uuid": "sg-1"}
    r1 = await api.call("POST", f"/v1/rooms/{room}/messages", alice, json=body)
    r2 = await api.call("POST", f"/v1/rooms/{room}/messages", alice, json=body)
    assert envelope_ok(r1, 201) == envelope_ok(r2, 201)
    assert bodies(await all_events(api, alice, room)) == ["grid once"]


# -- send on behalf --------------------------------------------------------------


async def test_send_on_behalf(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    r = await send_raw(
        api, alice, room, content=text("from bob"), as_participant_id=bob.participant_id
    )
    event = envelope_ok(r, 200)
    assert event["sender_id"] == bob.participant_id
    assert event["actor_id"] == alice.participant_id
    # a power-0 member cannot
    r = await send_raw(
        api, bob, room, content=text("from alice"), as_participant_id=alice.participant_id
    )
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    # the target must be a member
    r = await send_raw(
        api, alice, room, content=text("from carol"), as_participant_id=carol.participant_id
    )
    envelope_error(r, 404, "SW_PARTICIPANT_NOT_FOUND")
    r = await send_raw(api, alice, room, content=text("ghost"), as_participant_id="p-ghost")
    envelope_error(r, 404, "SW_PARTICIPANT_NOT_FOUND")
    # as yourself is just a send
    me = envelope_ok(
        await send_raw(api, bob, room, content=text("me"), as_participant_id=bob.participant_id),
        200,
    )
    assert me["sender_id"] == me["actor_id"] == bob.participant_id
    assert bodies(await all_events(api, alice, room)) == ["from bob", "me"]
    # idempotency keys on the effective sender
    k1 = envelope_ok(
        await send_raw(
            api,
            alice,
            room,
            content=text("k"),
            event_uuid="k",
            as_participant_id=bob.participant_id,
        ),
        200,
    )
    k2 = envelope_ok(
        await send_raw(
            api,
            alice,
            room,
            content=text("k"),
            event_uuid="k",
            as_participant_id=bob.participant_id,
        ),
        200,
    )
    assert k1 == k2
    assert k1["sender_id"] == bob.participant_id


async def test_idempotency_does_not_bypass_authorization(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    eve = await api.register("eve")
    room = await api.room(alice, bob, carol, name="Idem Room Name")
    envelope_ok(
        await send_raw(api, bob, room, content=text("bob idem secret"), event_uuid="guessable"),
        200,
    )
    # a non-member, and a power-0 member, replaying bob's uuid "as bob"
    for caller, status, code in ((eve, 403, "SW_NOT_MEMBER"), (carol, 403, "SW_ROOM_FORBIDDEN")):
        r = await send_raw(
            api,
            caller,
            room,
            content=text("x"),
            event_uuid="guessable",
            as_participant_id=bob.participant_id,
        )
        assert "bob idem secret" not in r.text
        envelope_error(r, status, code)


# -- rate limit ----------------------------------------------------------------


async def test_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=3)
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        bob = await api.register("bob")
        room = await api.room(alice, bob)
        sent = [
            envelope_ok(
                await send_raw(api, alice, room, content=text(f"m{i}"), event_uuid=f"u{i}"), 200
            )
            for i in range(3)
        ]
        r = await send_raw(api, alice, room, content=text("too many"), event_uuid="u3")
        error = envelope_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        retry = int(r.headers["Retry-After"])
        assert retry >= 1
        assert error["retry_after"] == retry
        assert isinstance(error["retry_after"], int)
        # ScaiGrid form: its own code, same limit
        r = await api.call("POST", f"/v1/rooms/{room}/messages", alice, json={"content": "sg"})
        error = envelope_error(r, 429, "RATE_LIMITED")
        assert int(r.headers["Retry-After"]) >= 1
        assert error["retry_after"] >= 1
        # an idempotent retry of an already-sent message is not limited
        again = envelope_ok(
            await send_raw(api, alice, room, content=text("m0"), event_uuid="u0"), 200
        )
        assert again == sent[0]
        # the rejected uuid was not stored: retrying it is still refused
        r = await send_raw(api, alice, room, content=text("too many"), event_uuid="u3")
        envelope_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        # the limit is per caller
        await api.send(bob, room, "bob is fine")
        assert bodies(await all_events(api, bob, room)) == ["m0", "m1", "m2", "bob is fine"]


async def test_rate_limit_counts_the_actor(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=3)
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        bob = await api.register("bob")
        room = await api.room(alice, bob)
        for i in range(3):
            r = await send_raw(
                api, alice, room, content=text(f"b{i}"), as_participant_id=bob.participant_id
            )
            envelope_ok(r, 200)
        r = await send_raw(
            api, alice, room, content=text("b3"), as_participant_id=bob.participant_id
        )
        envelope_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        r = await send_raw(api, alice, room, content=text("a"))
        envelope_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        # bob's own budget is untouched by what alice sent in his name
        for i in range(3):
            await api.send(bob, room, f"own{i}")


# -- authorization: no leaks to non-members (CONTRACT 6) -------------------------


async def test_non_member_sees_nothing(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    eve = await api.register("eve")
    secret_name = "Zanzibar Strategy Room"
    secret_topic = "Quarterly quokka quandaries"
    secret_body = "the password is swordfish-42"
    r = await api.call(
        "POST",
        "/v1/rooms",
        alice,
        json={
            "name": secret_name,
            "topic": secret_topic,
            "initial_members": [{"type": "user", "id": bob.participant_id}],
        },
    )
    room = envelope_ok(r, 201)["id"]
    sent = await api.send(bob, room, secret_body)
    leaks = (
        secret_name,
        secret_topic,
        secret_body,
        "swordfish",
        alice.participant_id,
        bob.participant_id,
        sent["id"],
    )

    def no_leak(resp: httpx.Response) -> None:
        for needle in leaks:
            assert needle not in resp.text, (needle, resp.text)

    sw_cases: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/rooms/{room}", None),
        ("GET", f"/v1/rooms/{room}/messages", None),
        ("GET", f"/v1/rooms/{room}/messages?direction=forward&limit=200", None),
        ("POST", f"/v1/rooms/{room}/send", {"content": text("let me in")}),
        (
            "POST",
            f"/v1/rooms/{room}/send",
            {"content": text("hi"), "as_participant_id": bob.participant_id},
        ),
        ("PATCH", f"/v1/rooms/{room}", {"name": "pwned"}),
        ("PUT", f"/v1/rooms/{room}/name", {"name": "pwned"}),
        ("PUT", f"/v1/rooms/{room}/topic", {"topic": "pwned"}),
        ("POST", f"/v1/rooms/{room}/invite", {"participant_id": eve.participant_id}),
        ("POST", f"/v1/rooms/{room}/kick", {"participant_id": bob.participant_id}),
        ("POST", f"/v1/rooms/{room}/ban", {"participant_id": bob.participant_id}),
        ("POST", f"/v1/rooms/{room}/unban", {"participant_id": bob.participant_id}),
        ("POST", f"/v1/rooms/{room}/close", None),
        ("DELETE", f"/v1/rooms/{room}", None),
        ("PUT", f"/v1/rooms/{room}/members/{eve.participant_id}/power", {"power_level": 100}),
        ("PUT", f"/v1/rooms/{room}/members/{bob.participant_id}/power", {"power_level": 0}),
    ]
    for method, path, body in sw_cases:
        r = await api.call(method, path, eve, json=body)
        envelope_error(r, 403, "SW_NOT_MEMBER")
        no_leak(r)
    sg_cases: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/rooms/{room}/members", None),
        ("POST", f"/v1/rooms/{room}/members", {"type": "user", "id": eve.participant_id}),
        ("DELETE", f"/v1/rooms/{room}/members/{bob.participant_id}", None),
        ("POST", f"/v1/rooms/{room}/messages", {"content": "let me in"}),
        ("POST", f"/v1/rooms/{room}/messages/{sent['id']}/reply", {"content": "re"}),
    ]
    for method, path, body in sg_cases:
        r = await api.call(method, path, eve, json=body)
        envelope_error(r, 404, "ROOM_NOT_FOUND")
        no_leak(r)
    # and it is not in any of eve's listings
    for path in ("/v1/rooms", "/v1/directory/rooms", "/v1/sync?timeout=0"):
        r = await api.call("GET", path, eve)
        envelope_ok(r, 200)
        no_leak(r)
    # nothing eve tried got in
    events = await all_events(api, alice, room)
    assert bodies(events) == [secret_body]
    assert (await api.ok("GET", f"/v1/rooms/{room}", alice))["name"] == secret_name


async def test_former_member_loses_access(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob, name="Former")
    await api.send(bob, room, "while inside")
    await api.ok(
        "POST", f"/v1/rooms/{room}/kick", alice, json={"participant_id": bob.participant_id}
    )
    await api.send(alice, room, "after bob left: tangerine")
    for path in (f"/v1/rooms/{room}", f"/v1/rooms/{room}/messages"):
        r = await api.call("GET", path, bob)
        envelope_error(r, 403, "SW_NOT_MEMBER")
        assert "tangerine" not in r.text
    r = await send_raw(api, bob, room, content=text("still here?"))
    envelope_error(r, 403, "SW_NOT_MEMBER")
