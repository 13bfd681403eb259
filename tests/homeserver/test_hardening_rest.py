"""Issue 9, REST half: null/wrong-typed PATCH fields, viewer writes, Unicode digits.

Each test here failed before its fix: ``is_public: null`` was a 500, a viewer
could invite (and edit, redact, type), ``timeout=²`` was a 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Api, User, envelope_error, envelope_ok

# -- defect 1: PATCH/PUT fields ----------------------------------------------


PATCH_CASES: list[tuple[dict[str, Any], str]] = [
    ({"is_public": None}, "is_public"),
    ({"is_public": "yes"}, "is_public"),
    ({"is_public": 1}, "is_public"),
    ({"name": 5}, "name"),
    ({"name": ["x"]}, "name"),
    ({"topic": {"a": 1}}, "topic"),
    ({"description": False}, "description"),
]


async def test_patch_room_refuses_null_or_wrong_type_naming_the_field(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice, is_public=True)
    for body, field in PATCH_CASES:
        r = await api.call("PATCH", f"/v1/rooms/{room}", alice, json=body)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert error["message"].startswith(field), (body, error)
    # nothing changed
    data = await api.ok("GET", f"/v1/rooms/{room}", alice)
    assert data["is_public"] is True
    assert data["name"] == "room"


async def test_patch_room_null_clears_nullable_fields_and_absent_changes_nothing(
    api: Api,
) -> None:
    alice = await api.register("alice")
    room = await api.room(alice, topic="t", is_public=True)
    data = envelope_ok(
        await api.call("PATCH", f"/v1/rooms/{room}", alice, json={"topic": None}), 200
    )
    assert data["topic"] is None
    assert data["is_public"] is True
    data = envelope_ok(await api.call("PATCH", f"/v1/rooms/{room}", alice, json={}), 200)
    assert data["name"] == "room"
    data = envelope_ok(
        await api.call("PATCH", f"/v1/rooms/{room}", alice, json={"is_public": False}), 200
    )
    assert data["is_public"] is False


@pytest.mark.parametrize("key", ["name", "topic"])
async def test_put_name_or_topic_needs_the_field(api: Api, key: str) -> None:
    alice = await api.register("alice")
    room = await api.room(alice, topic="t")
    r = await api.call("PUT", f"/v1/rooms/{room}/{key}", alice, json={})
    error = envelope_error(r, 400, "SW_INVALID_PARAM")
    assert error["message"].startswith(key)
    r = await api.call("PUT", f"/v1/rooms/{room}/{key}", alice, json={key: 7})
    assert envelope_error(r, 400, "SW_INVALID_PARAM")["message"].startswith(key)


PUT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/me", {"display_name": None}, "display_name"),
    ("/v1/me", {"bio": 3}, "bio"),
    ("/v1/me/presence", {"state": None}, "state"),
    ("/v1/typing", {"room_id": None, "typing": True}, "room_id"),
    ("/v1/typing", {"room_id": "room-x", "typing": None}, "typing"),
    ("/v1/rooms/{room}/members/{me}/power", {"power_level": None}, "power_level"),
    ("/v1/rooms/{room}/members/{me}/power", {"power_level": "5"}, "power_level"),
    ("/v1/rooms/{room}/read-marker", {"event_id": None}, "event_id"),
    ("/v1/rooms/{room}/notification-mode", {"mode": None}, "mode"),
    ("/v1/rooms/{room}/mute", {"until": 5}, "until"),
    ("/v1/rooms/{room}/ai/engagement", {"mode": None}, "mode"),
]


async def test_every_put_refuses_null_or_wrong_type_naming_the_field(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    for path, body, field in PUT_CASES:
        target = path.format(room=room, me=alice.participant_id)
        r = await api.call("PUT", target, alice, json=body)
        assert r.status_code in (400, 422), (path, body, r.text)
        error = r.json()["error"]
        assert field in error["message"], (path, error)


# -- defect 2: viewers are read-only --------------------------------------------


async def _viewer_room(api: Api) -> tuple[User, User, str, str]:
    """alice owns a room; vic sent a message there, left, and came back as a viewer."""
    alice = await api.register("alice")
    vic = await api.register("vic")
    room = await api.room(alice, vic)
    own = await api.send(vic, room, "mine")
    await api.ok("POST", f"/v1/rooms/{room}/leave", vic)
    added = await api.ok(
        "POST",
        f"/v1/rooms/{room}/members",
        alice,
        status=201,
        json={"type": "user", "id": vic.participant_id, "role": "viewer"},
    )
    assert added["role"] == "viewer"
    return alice, vic, room, str(own["id"])


async def test_viewer_cannot_invite_and_the_outsider_cannot_join(api: Api) -> None:
    alice, vic, room, _ = await _viewer_room(api)
    mallory = await api.register("mallory")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/invite", vic, json={"participant_id": mallory.participant_id}
    )
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    r = await api.call("POST", f"/v1/rooms/{room}/join", mallory)
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    r = await api.call("GET", f"/v1/rooms/{room}/messages", mallory)
    envelope_error(r, 403, "SW_NOT_MEMBER")
    # a member still invites
    await api.ok(
        "POST", f"/v1/rooms/{room}/invite", alice, json={"participant_id": mallory.participant_id}
    )


async def test_viewer_cannot_edit_or_redact_even_their_own_message(api: Api) -> None:
    _, vic, room, own = await _viewer_room(api)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/events/{own}/edit",
        vic,
        json={"content": {"msgtype": "swp.text", "body": "changed"}},
    )
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    r = await api.call("POST", f"/v1/rooms/{room}/events/{own}/redact", vic, json={})
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    r = await api.call("POST", f"/v1/rooms/{room}/events/{own}/react", vic, json={"emoji": "+1"})
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")


async def test_viewer_typing_true_is_refused_false_is_a_no_op(api: Api) -> None:
    alice, vic, room, _ = await _viewer_room(api)
    r = await api.call("PUT", "/v1/typing", vic, json={"room_id": room, "typing": True})
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    await api.ok("PUT", "/v1/typing", vic, json={"room_id": room, "typing": False})
    state = await api.ok("GET", f"/v1/rooms/{room}/state", alice)
    assert vic.participant_id not in state.get("typing", [])
    await api.ok("PUT", "/v1/typing", alice, json={"room_id": room, "typing": True})


async def test_viewer_keeps_what_concerns_only_themself(api: Api) -> None:
    alice, vic, room, _ = await _viewer_room(api)
    sent = await api.send(alice, room, "read me")
    await api.ok("PUT", f"/v1/rooms/{room}/read-marker", vic, json={"event_id": sent["id"]})
    await api.ok("PUT", f"/v1/rooms/{room}/notification-mode", vic, json={"mode": "mentions"})
    await api.ok("POST", f"/v1/rooms/{room}/leave", vic)


# -- defect 4: integer query parameters take ASCII digits only ------------------


async def test_sync_params_with_unicode_digits_are_400(api: Api) -> None:
    alice = await api.register("alice")
    for value in ("²", "①", "٣", "12³", "\uff11\uff10"):
        for param in ("timeout", "since", "limit"):
            r = await api.call("GET", "/v1/sync", alice, params={param: value})
            error = envelope_error(r, 400, "SW_INVALID_PARAM")
            assert error["message"].startswith(param), (value, error)


async def test_history_limit_and_from_with_unicode_digits_are_400(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    for param in ("limit", "from"):
        r = await api.call("GET", f"/v1/rooms/{room}/messages", alice, params={param: "²"})
        envelope_error(r, 400, "SW_INVALID_PARAM")
    r = await api.call("GET", "/v1/sync", alice, params={"timeout": "0", "since": "0"})
    envelope_ok(r, 200)
