"""Seed 004 end to end: presence and typing frames, the state snapshot and its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from websockets.trio.client import ClientConnection, connect

from homeserver.app import Running
from tests.support import Api, User

FUTURE = "2099-01-01T00:00:00Z"


@asynccontextmanager
async def stream(server: Running, user: User) -> AsyncIterator[ClientConnection]:
    url = server.base_url.replace("http://", "ws://") + f"/v1/stream?token={user.access_token}"
    async with connect(url, compression=None) as ws:
        hello = orjson.loads(await ws.recv())
        assert hello["type"] == "hello"
        yield ws


async def next_of(ws: ClientConnection, kind: str, **match: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def nothing_of(ws: ClientConnection, kind: str, about: str, seconds: float = 0.5) -> None:
    with trio.move_on_after(seconds):
        while True:
            frame = orjson.loads(await ws.recv())
            assert not (frame["type"] == kind and frame.get("participant_id") == about), frame


async def test_presence_and_typing_reach_members_not_strangers(server: Running, api: Api) -> None:
    alice, bob, eve = [await api.register(n) for n in ("alice", "bob", "eve")]
    room = await api.room(alice, bob)
    await api.room(eve)  # eve is elsewhere
    async with stream(server, bob) as bob_ws, stream(server, eve) as eve_ws:
        async with stream(server, alice):
            seen = await next_of(bob_ws, "presence", participant_id=alice.participant_id)
            assert seen["status"] == "online"
            await api.ok("PUT", "/v1/typing", alice, json={"room_id": room, "typing": True})
            frame = await next_of(bob_ws, "typing", participant_id=alice.participant_id)
            assert frame == {**frame, "room_id": room, "typing": True}
            await api.send(alice, room, "done typing")  # sending clears typing
            cleared = await next_of(bob_ws, "typing", participant_id=alice.participant_id)
            assert cleared["typing"] is False
        gone = await next_of(bob_ws, "presence", participant_id=alice.participant_id)
        assert gone["status"] == "offline"
        await nothing_of(eve_ws, "presence", alice.participant_id)
        await nothing_of(eve_ws, "typing", alice.participant_id, 0.1)


async def test_typing_is_for_members_only(api: Api) -> None:
    alice, eve = await api.register("alice"), await api.register("eve")
    room = await api.room(alice)
    r = await api.call("PUT", "/v1/typing", eve, json={"room_id": room, "typing": True})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "SW_NOT_MEMBER"
    r = await api.call("PUT", "/v1/typing", alice, json={"room_id": room, "typing": "yes"})
    assert r.status_code == 400


async def test_presence_endpoint_and_appear_offline(server: Running, api: Api) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.room(alice, bob)
    async with stream(server, alice):
        ids = f"{alice.participant_id},{bob.participant_id}"
        states = await api.ok("GET", f"/v1/presence?ids={ids}", bob)
        assert states == {alice.participant_id: "online", bob.participant_id: "offline"}
        await api.ok("PUT", "/v1/me/presence", alice, json={"state": "appear_offline"})
        assert await api.ok("GET", f"/v1/presence?ids={ids}", bob) == {
            alice.participant_id: "offline",
            bob.participant_id: "offline",
        }
        mine = await api.ok("GET", f"/v1/presence?ids={alice.participant_id}", alice)
        assert mine == {alice.participant_id: "appear_offline"}
        await api.ok("PUT", "/v1/me/presence", alice, json={"state": "auto"})
        assert (await api.ok("GET", f"/v1/presence?ids={ids}", bob))[
            alice.participant_id
        ] == "online"
    too_many = ",".join(f"p-{n}" for n in range(101))
    r = await api.call("GET", f"/v1/presence?ids={too_many}", bob)
    assert r.status_code == 400
    r = await api.call("PUT", "/v1/me/presence", alice, json={"state": "asleep"})
    assert r.status_code == 400


async def test_state_snapshot_has_all_ten_fields(api: Api) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    room = await api.room(alice, bob, name="Design")
    sent = await api.send(bob, room, "one")
    await api.send(bob, room, "two")
    snap = await api.ok("GET", f"/v1/rooms/{room}/state", alice)
    assert set(snap) == {
        "room",
        "members",
        "engagement",
        "plan",
        "active_sidekicks",
        "active_call",
        "unread_count",
        "last_read_event_id",
        "muted_until",
        "snoozed_event_ids",
    }
    assert snap["room"]["name"] == "Design"
    assert snap["plan"] is None
    assert snap["active_call"] is None
    assert snap["active_sidekicks"] == []
    assert snap["unread_count"] == 2
    assert snap["last_read_event_id"] is None
    members = {m["participant_id"]: m for m in snap["members"]}
    assert members[alice.participant_id]["power_level"] == 100
    assert members[alice.participant_id]["role"] == "owner"
    assert members[bob.participant_id]["notification_mode"] == "mentions"
    # CONTRACT 12: the default is `mention` outside a DM with an AI (it was `always`).
    assert snap["engagement"] == {
        "mode": "mention",
        "response_mode": "conversational",
        "overrides": {},
    }

    await api.ok("PUT", f"/v1/rooms/{room}/read-marker", alice, json={"event_id": sent["id"]})
    await api.ok("PUT", f"/v1/rooms/{room}/mute", alice, json={"until": FUTURE})
    await api.ok("PUT", f"/v1/rooms/{room}/notification-mode", alice, json={"mode": "all"})
    snooze = await api.ok(
        "POST", f"/v1/messages/{sent['id']}/snooze", alice, status=201, json={"until": FUTURE}
    )
    await api.ok("PUT", f"/v1/rooms/{room}/ai/engagement", alice, json={"mode": "always"})
    snap = await api.ok("GET", f"/v1/rooms/{room}/state", alice)
    assert snap["unread_count"] == 1
    assert snap["last_read_event_id"] == sent["id"]
    assert snap["muted_until"] == "2099-01-01T00:00:00.000Z"
    assert snap["snoozed_event_ids"] == [sent["id"]]
    assert snap["engagement"]["mode"] == "always"
    me = next(m for m in snap["members"] if m["participant_id"] == alice.participant_id)
    assert me["notification_mode"] == "all"
    assert me["muted_until"] == "2099-01-01T00:00:00.000Z"
    # Bob's own view is his own: not muted, nothing snoozed, his own unread count.
    bob_snap = await api.ok("GET", f"/v1/rooms/{room}/state", bob)
    assert bob_snap["muted_until"] is None
    assert bob_snap["snoozed_event_ids"] == []
    assert bob_snap["unread_count"] == 0
    snoozes = await api.ok("GET", "/v1/me/snoozes", alice)
    assert [s["id"] for s in snoozes["items"]] == [snooze["id"]]
    await api.ok("DELETE", f"/v1/me/snoozes/{snooze['id']}", alice)
    assert (await api.ok("GET", "/v1/me/snoozes", alice))["items"] == []


async def test_state_settings_refusals(api: Api) -> None:
    alice, eve = await api.register("alice"), await api.register("eve")
    room = await api.room(alice, name="secret-room-name")
    sent = await api.send(alice, room, "secret-body")
    r = await api.call("GET", f"/v1/rooms/{room}/state", eve)
    assert r.status_code == 403
    assert "secret" not in r.text
    for path, body in (
        (f"/v1/rooms/{room}/mute", {"until": "yesterday"}),
        (f"/v1/rooms/{room}/mute", {"until": "2000-01-01T00:00:00Z"}),
        (f"/v1/rooms/{room}/notification-mode", {"mode": "loud"}),
        (f"/v1/rooms/{room}/ai/engagement", {"mode": "sometimes"}),
        (f"/v1/rooms/{room}/ai/response-mode", {"mode": "telepathy"}),
    ):
        r = await api.call("PUT", path, alice, json=body)
        assert r.status_code == 400, (path, r.text)
    r = await api.call("POST", f"/v1/messages/{sent['id']}/snooze", eve, json={"until": FUTURE})
    assert r.status_code == 404
    assert "secret" not in r.text
    r = await api.call("POST", f"/v1/messages/{sent['id']}/snooze", alice, json={})
    assert r.status_code == 400


async def test_per_ai_engagement_override(api: Api) -> None:
    alice, helper = await api.register("alice"), await api.register("helper")
    room = await api.room(alice, helper)
    data = await api.ok(
        "PUT",
        f"/v1/rooms/{room}/ai/response-mode",
        alice,
        json={"mode": "streaming", "participant_id": helper.participant_id},
    )
    assert data["overrides"] == {
        helper.participant_id: {"mode": None, "response_mode": "streaming"}
    }
    assert data["response_mode"] == "conversational"
    got = await api.ok("GET", f"/v1/rooms/{room}/ai/engagement", alice)
    assert got == data
    r = await api.call(
        "PUT",
        f"/v1/rooms/{room}/ai/engagement",
        alice,
        json={"mode": "always", "participant_id": "p-nobody"},
    )
    assert r.status_code == 404
