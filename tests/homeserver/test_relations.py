"""Messages and their relations over REST and the stream (CONTRACT section 7).

Edits, redactions, send-on-behalf, idempotency, rate limits, mentions and
threading, reactions and read markers: every rule, including the refusals
(exact status and code), plus the frames the stream carries for each.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from websockets.trio.client import ClientConnection, connect

from conf import Settings
from homeserver import app
from homeserver.app import Running
from homeserver.store.sqlite import SqliteWriter
from protocol.events import verify_event_id
from protocol.timefmt import iso_ms
from storage import db
from storage import events as event_store
from tests.support import Api, User, api_for, make_settings, open_db, start_server
from tests.support import envelope_error as expect_error

Frame = dict[str, Any]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
T0 = 1_800_000_000_000


# --------------------------------------------------------------------------- harness


class FakeClock:
    """A wall clock (ms) that only moves when the test says so."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@asynccontextmanager
async def clocked_server(settings: Settings, clock: FakeClock) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(partial(app.run, clock=clock), settings)
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def server_and_api(settings: Settings) -> AsyncIterator[tuple[Running, Api]]:
    async with start_server(settings) as running, api_for(running) as api:
        yield running, api


class Stream:
    """One /v1/stream connection, read frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self, wait: float = 10) -> Frame:
        with trio.fail_after(wait):
            raw = await self.ws.recv()
        frame = json.loads(raw)
        assert isinstance(frame, dict)
        return frame

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def until(self, pred: Callable[[Frame], bool], wait: float = 10) -> Frame:
        """The next frame matching ``pred`` (frames before it are skipped)."""
        with trio.fail_after(wait):
            while True:
                frame = await self.recv()
                if pred(frame):
                    return frame

    async def drain(self) -> list[Frame]:
        """Every frame queued before now: ping, then collect until the pong."""
        await self.send({"type": "ping"})
        frames: list[Frame] = []
        while True:
            frame = await self.recv()
            if frame["type"] == "pong":
                return frames
            frames.append(frame)


@asynccontextmanager
async def open_stream(
    running: Running, user: User, *, since: int | None = None, token: str | None = None
) -> AsyncIterator[Stream]:
    url = f"ws://{running.host}:{running.port}/v1/stream?token={token or user.access_token}"
    if since is not None:
        url += f"&since={since}"
    async with connect(url) as ws:
        stream = Stream(ws)
        hello = await stream.recv()
        assert hello["type"] == "hello"
        assert hello["participant_id"] == user.participant_id
        yield stream


def is_type(kind: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("type") == kind


def has_req_id(req_id: str, frame: Frame) -> bool:
    return frame.get("req_id") == req_id


def text(body: str) -> Frame:
    return {"msgtype": "swp.text", "body": body}


async def edit(api: Api, user: User, room: str, eid: str, body: str) -> httpx.Response:
    return await api.call(
        "POST", f"/v1/rooms/{room}/events/{eid}/edit", user, json={"content": text(body)}
    )


async def redact(api: Api, user: User, room: str, eid: str, reason: str | None = None) -> Any:
    payload = {} if reason is None else {"reason": reason}
    return await api.call("POST", f"/v1/rooms/{room}/events/{eid}/redact", user, json=payload)


async def react(api: Api, user: User, room: str, eid: str, emoji: str) -> httpx.Response:
    return await api.call(
        "POST", f"/v1/rooms/{room}/events/{eid}/react", user, json={"emoji": emoji}
    )


async def unreact(api: Api, user: User, room: str, eid: str, emoji: str) -> httpx.Response:
    return await api.call("DELETE", f"/v1/rooms/{room}/events/{eid}/react/{emoji}", user)


async def history(api: Api, user: User, room: str) -> list[Frame]:
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?direction=forward&limit=200", user)
    items = page["items"]
    assert isinstance(items, list)
    return items


async def messages_of(api: Api, user: User, room: str) -> list[Frame]:
    return [e for e in await history(api, user, room) if e["type"] == "swp.room.message"]


async def sync_all(api: Api, user: User, since: int = 0) -> list[Frame]:
    data = await api.ok("GET", f"/v1/sync?since={since}&limit=500&timeout=0", user)
    events = data["events"]
    assert isinstance(events, list)
    return events


async def unread(api: Api, user: User, room: str) -> Frame:
    data = await api.ok("GET", f"/v1/rooms/{room}/unread", user)
    assert isinstance(data, dict)
    return data


async def set_power(api: Api, owner: User, room: str, member: User, level: int) -> None:
    await api.ok(
        "PUT",
        f"/v1/rooms/{room}/members/{member.participant_id}/power",
        owner,
        json={"power_level": level},
    )


def query(running: Running, sql: str, *params: Any) -> list[sqlite3.Row]:
    with open_db(running) as conn:
        return list(conn.execute(sql, params).fetchall())


def room_events(running: Running, room: str) -> list[sqlite3.Row]:
    return query(
        running,
        "SELECT event_id, type, relates_to, prev_event_ids, content, stream_position"
        " FROM events WHERE room_id = ? ORDER BY stream_position",
        room,
    )


# --------------------------------------------------------------------------- edits


async def test_edit_shows_latest_content_everywhere(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "first version")
    r1 = await edit(api, alice, room, sent["id"], "second version")
    assert r1.status_code == 200, r1.text
    r2 = await edit(api, alice, room, sent["id"], "third version")
    assert r2.status_code == 200, r2.text
    edited = r2.json()["data"]
    assert edited["id"] == sent["id"]
    assert edited["type"] == "swp.room.message"
    assert edited["content"] == text("third version")
    assert edited["original_content"] == text("first version")
    assert edited["edited_at"] is not None
    assert edited["sender_id"] == alice.participant_id

    # History: one item for the message, latest content, original kept.
    msgs = await messages_of(api, bob, room)
    assert [m["id"] for m in msgs] == [sent["id"]]
    (shown,) = msgs
    assert shown["content"] == text("third version")
    assert shown["original_content"] == text("first version")
    assert shown["edited_at"] == edited["edited_at"]
    assert shown["stream_position"] == sent["stream_position"]

    # The room view's recent messages.
    detail = await api.ok("GET", f"/v1/rooms/{room}", bob)
    (recent,) = [e for e in detail["recent_messages"] if e["type"] == "swp.room.message"]
    assert recent["content"] == text("third version")
    assert recent["original_content"] == text("first version")

    # Sync: the message (latest content) and each edit as the same id, later positions.
    events = [e for e in await sync_all(api, bob) if e["id"] == sent["id"]]
    assert len(events) == 3
    positions = [e["stream_position"] for e in events]
    assert positions == sorted(positions)
    assert positions[0] == sent["stream_position"]
    assert len(set(positions)) == 3
    for e in events:
        assert e["type"] == "swp.room.message"
        assert e["original_content"] == text("first version")
        assert e["edited_at"] is not None
    assert [e["content"]["body"] for e in events[1:]] == ["second version", "third version"]

    # The DAG: each edit is its own event, chained after the room's previous event.
    rows = room_events(server, room)
    edits = [r for r in rows if r["type"] == "swp.room.edit"]
    assert len(edits) == 2
    assert all(r["relates_to"] == sent["id"] for r in edits)
    assert json.loads(rows[-1]["content"]) == text("third version")
    for before, after in itertools.pairwise(rows):
        assert json.loads(after["prev_event_ids"]) == [before["event_id"]]
    # original_content is the stored first content; it never changed.
    (orig,) = [r for r in rows if r["event_id"] == sent["id"]]
    assert json.loads(orig["content"]) == text("first version")


async def test_edit_arrives_on_stream_as_message_with_new_position(
    server: Running, api: Api
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    async with open_stream(server, bob) as bob_ws, open_stream(server, alice) as alice_ws:
        sent = await api.send(alice, room, "before")
        first = await bob_ws.until(lambda f: f.get("id") == sent["id"])
        assert first["content"] == text("before")
        assert first.get("edited_at") is None
        assert "original_content" not in first
        r = await edit(api, alice, room, sent["id"], "after")
        assert r.status_code == 200, r.text
        for ws in (bob_ws, alice_ws):  # the sender's own connection included
            frame = await ws.until(
                lambda f: f.get("id") == sent["id"] and f["content"] == text("after")
            )
            assert frame["type"] == "swp.room.message"
            assert frame["stream_position"] > sent["stream_position"]
            assert frame["edited_at"] is not None
            assert frame["original_content"] == text("before")
            assert frame["sender_id"] == alice.participant_id
            assert frame["room_id"] == room
        edit_position = frame["stream_position"]

    # Replay with ?since= carries the same edit frame.
    async with open_stream(server, bob, since=sent["stream_position"]) as replay:
        frame = await replay.until(lambda f: f.get("id") == sent["id"])
        assert frame["stream_position"] == edit_position
        assert frame["content"] == text("after")
        assert frame["original_content"] == text("before")


async def test_edit_refusals(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    other_room = await api.room(alice)
    sent = await api.send(alice, room, "mine")

    # Not the sender, even with more power: bob's own message edited by alice (creator).
    expect_error(await edit(api, bob, room, sent["id"], "x"), 403, "SW_ROOM_FORBIDDEN")
    bobs = await api.send(bob, room, "bob's")
    expect_error(await edit(api, alice, room, bobs["id"], "x"), 403, "SW_ROOM_FORBIDDEN")
    # Not a member.
    expect_error(await edit(api, carol, room, sent["id"], "x"), 403, "SW_NOT_MEMBER")
    # Unknown event, event of another room, non-message event.
    expect_error(await edit(api, alice, room, "evt-nope", "x"), 404, "SW_EVENT_NOT_FOUND")
    expect_error(await edit(api, alice, other_room, sent["id"], "x"), 404, "SW_EVENT_NOT_FOUND")
    (member_event,) = query(
        server,
        "SELECT event_id FROM events WHERE room_id = ? AND type = 'swp.room.member' LIMIT 1",
        room,
    )
    expect_error(
        await edit(api, alice, room, member_event["event_id"], "x"), 404, "SW_EVENT_NOT_FOUND"
    )
    # Bad bodies.
    path = f"/v1/rooms/{room}/events/{sent['id']}/edit"
    expect_error(await api.call("POST", path, alice, json={}), 400, "SW_INVALID_PARAM")
    expect_error(
        await api.call("POST", path, alice, json={"content": "text"}), 400, "SW_INVALID_PARAM"
    )
    big = {"content": {"msgtype": "swp.text", "body": "x" * 70_000}}
    expect_error(await api.call("POST", path, alice, json=big), 413, "SW_CONTENT_TOO_LARGE")
    # A redacted message can no longer be edited.
    assert (await redact(api, alice, room, sent["id"])).status_code == 200
    expect_error(await edit(api, alice, room, sent["id"], "x"), 404, "SW_EVENT_NOT_FOUND")
    # Nothing was stored by any refusal.
    rows = query(server, "SELECT COUNT(*) FROM events WHERE type = 'swp.room.edit'")
    assert rows[0][0] == 0


async def test_edit_on_behalf_message_by_sender_or_actor(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(owner, alice, bob)
    sent = await api.send(owner, room, "on behalf", as_participant_id=alice.participant_id)
    assert sent["sender_id"] == alice.participant_id
    assert sent["actor_id"] == owner.participant_id
    r = await edit(api, alice, room, sent["id"], "by the sender")
    assert r.status_code == 200, r.text
    r = await edit(api, owner, room, sent["id"], "by the actor")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["content"] == text("by the actor")
    assert data["original_content"] == text("on behalf")
    assert data["sender_id"] == alice.participant_id
    expect_error(await edit(api, bob, room, sent["id"], "x"), 403, "SW_ROOM_FORBIDDEN")
    # Redaction follows the same ownership: the actor and the sender both own it.
    expect_error(await redact(api, bob, room, sent["id"]), 403, "SW_REDACT_FORBIDDEN")
    for who in (alice, owner):
        other = await api.send(owner, room, "again", as_participant_id=alice.participant_id)
        r = await redact(api, who, room, other["id"])
        assert r.status_code == 200, r.text
        assert r.json()["data"]["redacted_by"] == who.participant_id


async def test_edit_window_is_24h_by_default(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path / "data", access_token_ttl=365 * 86400)
    async with clocked_server(settings, clock) as running, api_for(running) as api:
        alice = await api.register("alice")
        room = await api.room(alice)
        sent = await api.send(alice, room, "v1")
        clock.advance(DAY_MS - 1)
        r = await edit(api, alice, room, sent["id"], "v2")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["edited_at"] == iso_ms(T0 + DAY_MS - 1)
        clock.advance(2)
        error = expect_error(
            await edit(api, alice, room, sent["id"], "v3"), 409, "SW_EVENT_TOO_OLD_TO_EDIT"
        )
        assert "message" in error
        (shown,) = await messages_of(api, alice, room)
        assert shown["content"] == text("v2")
        assert shown["original_content"] == text("v1")
        # Still too old much later; the refusal stored nothing.
        clock.advance(300 * DAY_MS)
        expect_error(
            await edit(api, alice, room, sent["id"], "v4"), 409, "SW_EVENT_TOO_OLD_TO_EDIT"
        )
        rows = query(running, "SELECT COUNT(*) FROM events WHERE type = 'swp.room.edit'")
        assert rows[0][0] == 1


async def test_edit_window_is_configurable(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path / "data", edit_window_seconds=60)
    async with clocked_server(settings, clock) as running, api_for(running) as api:
        alice = await api.register("alice")
        room = await api.room(alice)
        sent = await api.send(alice, room, "v1")
        clock.advance(60_000)
        assert (await edit(api, alice, room, sent["id"], "v2")).status_code == 200
        clock.advance(1)
        expect_error(
            await edit(api, alice, room, sent["id"], "v3"), 409, "SW_EVENT_TOO_OLD_TO_EDIT"
        )
        # The window counts from the original message, not from the last edit.
        later = await api.send(alice, room, "w1")
        clock.advance(59_000)
        assert (await edit(api, alice, room, later["id"], "w2")).status_code == 200
        clock.advance(2_000)
        expect_error(
            await edit(api, alice, room, later["id"], "w3"), 409, "SW_EVENT_TOO_OLD_TO_EDIT"
        )


# --------------------------------------------------------------------------- redactions


async def test_redact_own_message_keeps_identity(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "oops")
    after = await api.send(bob, room, "next")
    r = await redact(api, alice, room, sent["id"], "posted by mistake")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["id"] == sent["id"]
    assert data["content"] == {}
    assert data["redacted_at"] is not None
    assert data["redacted_by"] == alice.participant_id
    assert data["reason"] == "posted by mistake"
    assert "original_content" not in data

    msgs = await messages_of(api, bob, room)
    assert [m["id"] for m in msgs] == [sent["id"], after["id"]]
    shown = msgs[0]
    for key in ("sender_id", "actor_id", "room_id", "stream_position", "depth", "origin_ts"):
        assert shown[key] == sent[key], key
    assert shown["prev_event_ids"] == sent["prev_event_ids"]
    assert shown["content"] == {}
    assert shown["redacted_by"] == alice.participant_id
    assert msgs[1]["prev_event_ids"] == [sent["id"]]

    # The redaction is itself an event.
    (red,) = [e for e in await sync_all(api, bob) if e["type"] == "swp.room.redaction"]
    assert red["event_id"] == sent["id"]
    assert red["redacted_by"] == alice.participant_id
    assert red["reason"] == "posted by mistake"
    assert red["sender_id"] == alice.participant_id
    assert red["id"] != sent["id"]
    assert red["stream_position"] > after["stream_position"]


async def test_redact_others_needs_redact_other_power(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(owner, alice, bob)
    m1 = await api.send(alice, room, "one")
    m2 = await api.send(alice, room, "two")
    m3 = await api.send(owner, room, "three")

    expect_error(await redact(api, bob, room, m1["id"]), 403, "SW_REDACT_FORBIDDEN")
    expect_error(await redact(api, carol, room, m1["id"]), 403, "SW_NOT_MEMBER")
    expect_error(await redact(api, alice, room, m3["id"]), 403, "SW_REDACT_FORBIDDEN")
    await set_power(api, owner, room, bob, 49)
    expect_error(await redact(api, bob, room, m1["id"]), 403, "SW_REDACT_FORBIDDEN")
    await set_power(api, owner, room, bob, 50)
    r = await redact(api, bob, room, m1["id"], "moderated")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["redacted_by"] == bob.participant_id
    r = await redact(api, owner, room, m2["id"])
    assert r.status_code == 200, r.text
    assert r.json()["data"]["redacted_by"] == owner.participant_id
    # Refusals left no trace.
    rows = query(server, "SELECT COUNT(*) FROM events WHERE type = 'swp.room.redaction'")
    assert rows[0][0] == 2
    (m3_shown,) = [m for m in await messages_of(api, owner, room) if m["id"] == m3["id"]]
    assert m3_shown["content"] == text("three")


async def test_redact_refusals_for_unknown_targets(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    other = await api.room(alice)
    sent = await api.send(alice, room, "x")
    expect_error(await redact(api, alice, room, "evt-nope"), 404, "SW_EVENT_NOT_FOUND")
    expect_error(await redact(api, alice, other, sent["id"]), 404, "SW_EVENT_NOT_FOUND")
    r = await redact(api, alice, room, sent["id"])
    assert r.status_code == 200
    (red,) = query(server, "SELECT event_id FROM events WHERE type = 'swp.room.redaction'")
    expect_error(await redact(api, alice, room, red["event_id"]), 404, "SW_EVENT_NOT_FOUND")
    edited = await api.send(alice, room, "y")
    await edit(api, alice, room, edited["id"], "y2")
    (edit_row,) = query(server, "SELECT event_id FROM events WHERE type = 'swp.room.edit'")
    expect_error(await redact(api, alice, room, edit_row["event_id"]), 404, "SW_EVENT_NOT_FOUND")
    edit_id = edit_row["event_id"]
    expect_error(await react(api, alice, room, edit_id, "x"), 404, "SW_EVENT_NOT_FOUND")
    long_reason = {"reason": "r" * 2000}
    r = await api.call(
        "POST", f"/v1/rooms/{room}/events/{sent['id']}/redact", alice, json=long_reason
    )
    expect_error(r, 400, "SW_INVALID_PARAM")


async def test_redact_twice_is_a_noop(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "gone soon")
    async with open_stream(server, bob) as bob_ws:
        first = await redact(api, alice, room, sent["id"], "first")
        assert first.status_code == 200
        frame = await bob_ws.until(is_type("swp.room.redaction"))
        assert frame["event_id"] == sent["id"]
        second = await redact(api, alice, room, sent["id"], "second")
        assert second.status_code == 200, second.text
        assert second.json()["data"] == first.json()["data"]
        assert second.json()["data"]["reason"] == "first"
        # Without a reason, too.
        third = await redact(api, alice, room, sent["id"])
        assert third.status_code == 200
        assert not [f for f in await bob_ws.drain() if f["type"] == "swp.room.redaction"]
    rows = query(server, "SELECT COUNT(*) FROM events WHERE type = 'swp.room.redaction'")
    assert rows[0][0] == 1


async def test_redact_erases_edits_in_every_read(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "secret one")
    await edit(api, alice, room, sent["id"], "secret two")
    assert (await redact(api, alice, room, sent["id"])).status_code == 200
    (shown,) = await messages_of(api, bob, room)
    assert shown["content"] == {}
    assert shown.get("original_content") in (None, {})
    assert shown["edited_at"] is None
    for event in await sync_all(api, bob):
        blob = json.dumps(event)
        assert "secret" not in blob, event
    async with open_stream(server, bob, since=0) as replay:
        frames = await replay.drain()
    assert any(f.get("id") == sent["id"] for f in frames)
    assert not [f for f in frames if "secret" in json.dumps(f)]
    rows = room_events(server, room)
    assert not [r for r in rows if "secret" in r["content"]]


async def test_redaction_frame_on_stream(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    room = await api.room(owner, alice)
    sent = await api.send(alice, room, "spam")
    async with open_stream(server, alice) as alice_ws, open_stream(server, owner) as owner_ws:
        r = await redact(api, owner, room, sent["id"], "spam")
        assert r.status_code == 200
        for ws in (alice_ws, owner_ws):
            frame = await ws.until(is_type("swp.room.redaction"))
            assert frame["event_id"] == sent["id"]
            assert frame["redacted_by"] == owner.participant_id
            assert frame["reason"] == "spam"
            assert frame["sender_id"] == owner.participant_id
            assert frame["room_id"] == room
            assert frame["stream_position"] > sent["stream_position"]
            assert frame["id"] != sent["id"]
    async with open_stream(server, alice) as alice_ws:
        await redact(api, alice, room, (await api.send(alice, room, "x"))["id"])
        frame = await alice_ws.until(is_type("swp.room.redaction"))
        assert frame["reason"] is None


async def test_redaction_stops_reactions_and_unread_counting(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob, carol)
    m1 = await api.send(bob, room, "one")
    m2 = await api.send(bob, room, "two")
    assert (await react(api, alice, room, m2["id"], "+1")).status_code == 200
    assert (await react(api, carol, room, m2["id"], "+1")).status_code == 200
    assert (await unread(api, alice, room))["unread_count"] == 2
    assert (await unread(api, carol, room))["unread_count"] == 2
    (shown,) = [m for m in await messages_of(api, alice, room) if m["id"] == m2["id"]]
    assert shown["reactions"] == {"+1": 2}

    assert (await redact(api, bob, room, m2["id"])).status_code == 200
    assert (await unread(api, alice, room))["unread_count"] == 1
    assert (await unread(api, carol, room))["unread_count"] == 1
    assert (await unread(api, bob, room))["unread_count"] == 0
    (shown,) = [m for m in await messages_of(api, alice, room) if m["id"] == m2["id"]]
    assert "reactions" not in shown
    assert query(server, "SELECT COUNT(*) FROM reactions")[0][0] == 0
    expect_error(await react(api, alice, room, m2["id"], "+1"), 404, "SW_EVENT_NOT_FOUND")
    expect_error(await unreact(api, alice, room, m2["id"], "+1"), 404, "SW_EVENT_NOT_FOUND")
    # A marker can still sit on the redacted message; it counts what follows it.
    path = f"/v1/rooms/{room}/read-marker"
    assert (await api.ok("PUT", path, alice, json={"event_id": m1["id"]}))["unread_count"] == 0
    marker = await api.ok("PUT", path, alice, json={"event_id": m2["id"]})
    assert (marker["event_id"], marker["unread_count"], marker["moved"]) == (m2["id"], 0, True)
    await api.send(bob, room, "three")
    assert (await unread(api, alice, room))["unread_count"] == 1


def _grep_data_dir(data_dir: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    found = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            blob = path.read_bytes()
            found += [(path.name, n) for n in needles if n in blob]
    return found


def _checkpoint(db_path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        conn.close()


def _verify_chain(db_path: Path, room: str, message_id: str) -> None:
    conn = db.connect(db_path, readonly=True)
    try:
        event = event_store.get_event(conn, message_id)
        assert event is not None
        assert event.is_redacted
        assert event.content == {}
        assert verify_event_id(event)
        rows = conn.execute(
            "SELECT event_id, prev_event_ids FROM events WHERE room_id = ?"
            " ORDER BY stream_position",
            (room,),
        ).fetchall()
        ids = [r["event_id"] for r in rows]
        at = ids.index(message_id)
        assert json.loads(rows[at + 1]["prev_event_ids"]) == [message_id]
        # Every stored event, edits and the redaction included, still hashes to its id.
        for stored in event_store.stored_chain(conn, room):
            assert verify_event_id(stored), stored.event_id
    finally:
        conn.close()


async def test_redaction_erases_text_from_database_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    small = [b"zq-marker-original-7a1", b"zq-marker-edit-one-7a2", b"zq-marker-edit-two-7a3"]
    # Large bodies spill into overflow pages; they must be wiped too.
    large = [(f"zq-big-{i}-" * 2000)[:20_000].encode() for i in range(3)]
    async with server_and_api(make_settings(data_dir)) as (running, api):
        alice = await api.register("alice")
        bob = await api.register("bob")
        room = await api.room(alice, bob)
        msgs = []
        for texts in (small, large):
            sent = await api.send(alice, room, texts[0].decode())
            for later in texts[1:]:
                assert (await edit(api, alice, room, sent["id"], later.decode())).status_code == 200
            msgs.append(sent)
        await api.send(bob, room, "zq-keep-this")
        await api.send(bob, room, "after")
        for sent in msgs:
            r = await redact(api, alice, room, sent["id"], "erase")
            assert r.status_code == 200
        assert isinstance(running.writer, SqliteWriter)
        running.writer.checkpoint()
        # Another checkpointer (the server's own WAL scrubber) may hold the lock for
        # a moment, making ours a partial one: repeat until one completes.
        for _ in range(100):
            if _checkpoint(running.db_path)[0] == 0:
                break
            await trio.sleep(0.05)
        else:
            raise AssertionError("no WAL checkpoint completed")
        # While the server still runs: the WAL was folded back and truncated.
        assert _grep_data_dir(data_dir, small + [t[:40] for t in large]) == []
        assert _grep_data_dir(data_dir, [b"zq-keep-this"]) != []
        db_path = running.db_path
    # And after a clean stop, with a second checkpoint for good measure.
    assert _checkpoint(db_path)[0] == 0
    assert _grep_data_dir(data_dir, small + [t[:40] for t in large]) == []
    for sent in msgs:
        _verify_chain(db_path, room, sent["id"])


# --------------------------------------------------------------------------- send on behalf


async def test_send_on_behalf_rest(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    bob = await api.register("bob")
    outsider = await api.register("outsider")
    room = await api.room(owner, alice, bob)
    sent = await api.send(owner, room, "standup", as_participant_id=alice.participant_id)
    assert sent["sender_id"] == alice.participant_id
    assert sent["actor_id"] == owner.participant_id
    (shown,) = await messages_of(api, bob, room)
    assert shown["sender_id"] == alice.participant_id
    assert shown["actor_id"] == owner.participant_id
    # As oneself: plain send.
    own = await api.send(owner, room, "me", as_participant_id=owner.participant_id)
    assert own["sender_id"] == own["actor_id"] == owner.participant_id

    path = f"/v1/rooms/{room}/send"
    body = {"content": text("x"), "as_participant_id": alice.participant_id}
    expect_error(await api.call("POST", path, bob, json=body), 403, "SW_ROOM_FORBIDDEN")
    await set_power(api, owner, room, bob, 99)
    expect_error(await api.call("POST", path, bob, json=body), 403, "SW_ROOM_FORBIDDEN")
    body["as_participant_id"] = outsider.participant_id
    expect_error(await api.call("POST", path, owner, json=body), 404, "SW_PARTICIPANT_NOT_FOUND")
    body["as_participant_id"] = "p-does-not-exist"
    expect_error(await api.call("POST", path, owner, json=body), 404, "SW_PARTICIPANT_NOT_FOUND")
    # A member who left is no longer a valid target.
    await api.ok("POST", f"/v1/rooms/{room}/leave", bob)
    body["as_participant_id"] = bob.participant_id
    expect_error(await api.call("POST", path, owner, json=body), 404, "SW_PARTICIPANT_NOT_FOUND")
    assert len(await messages_of(api, owner, room)) == 2


async def test_send_on_behalf_stream(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(owner, alice, bob)
    async with open_stream(server, owner) as owner_ws, open_stream(server, bob) as bob_ws:
        await owner_ws.send(
            {
                "type": "send",
                "req_id": "r1",
                "room_id": room,
                "content": text("for alice"),
                "as_participant_id": alice.participant_id,
            }
        )
        ack = await owner_ws.until(lambda f: f.get("req_id") == "r1")
        assert ack["type"] == "ack", ack
        event = ack["event"]
        assert event["sender_id"] == alice.participant_id
        assert event["actor_id"] == owner.participant_id
        frame = await bob_ws.until(lambda f: f.get("id") == event["id"])
        assert frame["sender_id"] == alice.participant_id
        assert frame["actor_id"] == owner.participant_id

        await bob_ws.send(
            {
                "type": "send",
                "req_id": "r2",
                "room_id": room,
                "content": text("as alice?"),
                "as_participant_id": alice.participant_id,
            }
        )
        error = await bob_ws.until(lambda f: f.get("req_id") == "r2")
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_ROOM_FORBIDDEN"
        await owner_ws.send(
            {
                "type": "send",
                "req_id": "r3",
                "room_id": room,
                "content": text("x"),
                "as_participant_id": "p-nobody",
            }
        )
        error = await owner_ws.until(lambda f: f.get("req_id") == "r3")
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_PARTICIPANT_NOT_FOUND"
    assert len(await messages_of(api, owner, room)) == 1


# --------------------------------------------------------------------------- idempotency


async def test_idempotent_retry_returns_the_stored_event(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    path = f"/v1/rooms/{room}/send"
    body = {"content": text("once"), "event_uuid": "u-1"}
    async with open_stream(server, bob) as bob_ws:
        r1 = await api.call("POST", path, alice, json=body)
        first = await bob_ws.until(is_type("swp.room.message"))
        r2 = await api.call("POST", path, alice, json=body)
        # Even a retry with different content returns the stored event.
        r3 = await api.call(
            "POST", path, alice, json={"content": text("changed"), "event_uuid": "u-1"}
        )
        assert not [f for f in await bob_ws.drain() if f["type"] == "swp.room.message"]
    assert r1.status_code == r2.status_code == r3.status_code == 200
    assert r1.json()["data"] == r2.json()["data"] == r3.json()["data"]
    assert first["id"] == r1.json()["data"]["id"]
    assert len(await messages_of(api, alice, room)) == 1
    # Another key, or the same key from another sender, makes a new event.
    other = await api.call("POST", path, alice, json={**body, "event_uuid": "u-2"})
    from_bob = await api.call("POST", path, bob, json=body)
    ids = {r1.json()["data"]["id"], other.json()["data"]["id"], from_bob.json()["data"]["id"]}
    assert len(ids) == 3
    assert len(await messages_of(api, alice, room)) == 3
    bad = await api.call("POST", path, alice, json={**body, "event_uuid": "u" * 256})
    expect_error(bad, 400, "SW_INVALID_PARAM")


async def test_idempotency_uses_the_effective_sender(server: Running, api: Api) -> None:
    owner = await api.register("owner")
    alice = await api.register("alice")
    room = await api.room(owner, alice)
    path = f"/v1/rooms/{room}/send"
    body = {
        "content": text("hi"),
        "event_uuid": "k",
        "as_participant_id": alice.participant_id,
    }
    a = await api.ok("POST", path, owner, json=body)
    b = await api.ok("POST", path, owner, json=body)
    assert a == b
    own = await api.ok("POST", path, owner, json={"content": text("hi"), "event_uuid": "k"})
    assert own["id"] != a["id"]
    assert own["sender_id"] == owner.participant_id
    assert len(await messages_of(api, owner, room)) == 2


async def test_idempotency_is_checked_before_the_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2)
    async with server_and_api(settings) as (_, api):
        alice = await api.register("alice")
        room = await api.room(alice)
        path = f"/v1/rooms/{room}/send"
        a = await api.ok("POST", path, alice, json={"content": text("a"), "event_uuid": "a"})
        await api.ok("POST", path, alice, json={"content": text("b"), "event_uuid": "b"})
        r = await api.call("POST", path, alice, json={"content": text("c"), "event_uuid": "c"})
        expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        again = await api.call("POST", path, alice, json={"content": text("a"), "event_uuid": "a"})
        assert again.status_code == 200, again.text
        assert again.json()["data"] == a
        # The refused one was not stored, so its key is still free.
        assert len(await messages_of(api, alice, room)) == 2


async def test_concurrent_duplicates_make_exactly_one_event(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    path = f"/v1/rooms/{room}/send"
    results: list[httpx.Response] = []

    async def one() -> None:
        results.append(
            await api.call("POST", path, alice, json={"content": text("dup"), "event_uuid": "c"})
        )

    async with open_stream(server, bob) as bob_ws:
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        frames = [f for f in await bob_ws.drain() if f["type"] == "swp.room.message"]
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["data"]["id"] for r in results}) == 1
    assert len(frames) == 1
    assert len(await messages_of(api, alice, room)) == 1


async def test_stream_send_is_idempotent(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    async with open_stream(server, alice) as ws:
        for req in ("s1", "s2"):
            await ws.send(
                {
                    "type": "send",
                    "req_id": req,
                    "room_id": room,
                    "content": text("hello"),
                    "event_uuid": "same",
                }
            )
        acks = [await ws.until(lambda f: f.get("type") == "ack") for _ in range(2)]
    assert {a["req_id"] for a in acks} == {"s1", "s2"}
    assert acks[0]["event"]["id"] == acks[1]["event"]["id"]
    rest = await api.ok(
        "POST", f"/v1/rooms/{room}/send", alice, json={"content": text("x"), "event_uuid": "same"}
    )
    assert rest["id"] == acks[0]["event"]["id"]
    assert len(await messages_of(api, alice, room)) == 1


async def test_idempotency_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    body = {"content": text("before restart"), "event_uuid": "restart-1"}
    async with server_and_api(settings) as (_, api):
        alice = await api.register("alice")
        room = await api.room(alice)
        r1 = await api.call("POST", f"/v1/rooms/{room}/send", alice, json=body)
        assert r1.status_code == 200
    async with server_and_api(settings) as (_, api):
        r2 = await api.call("POST", f"/v1/rooms/{room}/send", alice, json=body)
        assert r2.status_code == r1.status_code
        assert r2.json()["data"] == r1.json()["data"]
        assert len(await messages_of(api, alice, room)) == 1


async def test_idempotency_window_is_five_minutes(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path / "data")
    async with clocked_server(settings, clock) as running, api_for(running) as api:
        alice = await api.register("alice")
        room = await api.room(alice)
        path = f"/v1/rooms/{room}/send"
        body = {"content": text("x"), "event_uuid": "w"}
        a = await api.ok("POST", path, alice, json=body)
        clock.advance(5 * 60_000)
        assert (await api.ok("POST", path, alice, json=body))["id"] == a["id"]
        clock.advance(1)
        b = await api.ok("POST", path, alice, json=body)
        assert b["id"] != a["id"]
        clock.advance(60_000)
        assert (await api.ok("POST", path, alice, json=body))["id"] == b["id"]
        assert len(await messages_of(api, alice, room)) == 2


# --------------------------------------------------------------------------- rate limits


async def test_rate_limit_60_per_minute(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    for i in range(60):
        await api.send(alice, room, f"m{i}")
    async with open_stream(server, bob) as bob_ws:
        r = await api.call(
            "POST", f"/v1/rooms/{room}/send", alice, json={"content": text("one too many")}
        )
        error = expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        retry = r.headers["Retry-After"]
        assert retry.isdigit()
        assert 1 <= int(retry) <= 60
        assert error["retry_after"] == int(retry)
        assert not [f for f in await bob_ws.drain() if f["type"] == "swp.room.message"]
    msgs = await messages_of(api, alice, room)
    assert len(msgs) == 60
    assert all(m["content"]["body"] != "one too many" for m in msgs)
    # Others are not affected by alice's limit.
    await api.send(bob, room, "bob is fine")


async def test_rate_limit_window_rolls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2, rate_limit_window_seconds=1)
    async with server_and_api(settings) as (_, api):
        alice = await api.register("alice")
        room = await api.room(alice)
        await api.send(alice, room, "1")
        await api.send(alice, room, "2")
        r = await api.call("POST", f"/v1/rooms/{room}/send", alice, json={"content": text("3")})
        expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["retry_after"] == 1
        # The ScaiGrid form shares the allowance and answers in its own vocabulary.
        r = await api.call("POST", f"/v1/rooms/{room}/messages", alice, json={"content": "sg"})
        expect_error(r, 429, "RATE_LIMITED")
        assert r.headers["Retry-After"] == "1"
        await trio.sleep(1.05)
        await api.send(alice, room, "3")
        assert len(await messages_of(api, alice, room)) == 3


async def test_rate_limit_per_participant_overrides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server_and_api(make_settings(data)) as (_, api):
        alice = await api.register("alice")
        bot = await api.register("bot")
        carol = await api.register("carol")
        room = await api.room(alice, bot, carol)
    settings = make_settings(
        data,
        rate_limit_messages=2,
        rate_limit_overrides={bot.participant_id: 0, carol.participant_id: 4},
    )
    async with server_and_api(settings) as (_, api):
        for i in range(10):
            await api.send(bot, room, f"bot {i}")
        for i in range(4):
            await api.send(carol, room, f"carol {i}")
        r = await api.call("POST", f"/v1/rooms/{room}/send", carol, json={"content": text("5")})
        expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        for i in range(2):
            await api.send(alice, room, f"alice {i}")
        r = await api.call("POST", f"/v1/rooms/{room}/send", alice, json={"content": text("3")})
        expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        assert len(await messages_of(api, alice, room)) == 16


async def test_rate_limit_counts_the_actor_of_on_behalf_sends(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2)
    async with server_and_api(settings) as (_, api):
        owner = await api.register("owner")
        alice = await api.register("alice")
        room = await api.room(owner, alice)
        on_behalf = {"as_participant_id": alice.participant_id}
        await api.send(owner, room, "1", **on_behalf)
        await api.send(owner, room, "2", **on_behalf)
        r = await api.call(
            "POST", f"/v1/rooms/{room}/send", owner, json={"content": text("3"), **on_behalf}
        )
        expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        # alice's own allowance is untouched.
        await api.send(alice, room, "a1")
        await api.send(alice, room, "a2")
        assert len(await messages_of(api, owner, room)) == 4


async def test_rate_limit_on_the_stream(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2)
    async with server_and_api(settings) as (running, api):
        alice = await api.register("alice")
        bob = await api.register("bob")
        room = await api.room(alice, bob)
        async with open_stream(running, alice) as ws, open_stream(running, bob) as bob_ws:
            for i in range(3):
                await ws.send(
                    {"type": "send", "req_id": f"q{i}", "room_id": room, "content": text(str(i))}
                )
                reply = await ws.until(partial(has_req_id, f"q{i}"))
                if i < 2:
                    assert reply["type"] == "ack", reply
                else:
                    assert reply["type"] == "error"
                    assert reply["error"]["code"] == "SW_RATE_LIMIT_EXCEEDED"
                    assert reply["error"]["retry_after"] >= 1
            seen = [f for f in await bob_ws.drain() if f["type"] == "swp.room.message"]
            assert [f["content"]["body"] for f in seen] == ["0", "1"]
            # REST and stream share one allowance.
            r = await api.call("POST", f"/v1/rooms/{room}/send", alice, json={"content": text("r")})
            expect_error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        assert len(await messages_of(api, alice, room)) == 2


async def test_edits_reactions_redactions_do_not_count(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2)
    async with server_and_api(settings) as (_, api):
        alice = await api.register("alice")
        room = await api.room(alice)
        a = await api.send(alice, room, "a")
        b = await api.send(alice, room, "b")
        for i in range(5):
            assert (await edit(api, alice, room, a["id"], f"a{i}")).status_code == 200
        for emoji in ("x", "y", "z"):
            assert (await react(api, alice, room, a["id"], emoji)).status_code == 200
        assert (await redact(api, alice, room, b["id"])).status_code == 200


# --------------------------------------------------------------------------- mentions, threads


async def test_mentions_and_reply_pass_through_untouched(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    parent = await api.send(alice, room, "parent")
    content = {
        "msgtype": "swp.text",
        "body": "Hi @bob",
        "mentions": [bob.participant_id, bob.participant_id],
        "reply_to_event_id": parent["id"],
        "custom": {"nested": [1, 2, 3]},
    }
    sent = await api.ok("POST", f"/v1/rooms/{room}/send", alice, json={"content": content})
    assert sent["content"] == content
    # Not enforced as a tree: a reply to an unknown parent is stored as is.
    dangling = {**content, "reply_to_event_id": "evt-unknown"}
    sent2 = await api.ok("POST", f"/v1/rooms/{room}/send", alice, json={"content": dangling})
    assert sent2["content"] == dangling
    msgs = await messages_of(api, bob, room)
    assert [m["content"] for m in msgs[1:]] == [content, dangling]


async def test_scaigrid_mentions_are_normalised(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    r = await api.call(
        "POST",
        f"/v1/rooms/{room}/messages",
        alice,
        json={"content": "hey bob", "mention": [{"type": "user", "id": bob.participant_id}]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["content"] == {
        "msgtype": "swp.text",
        "body": "hey bob",
        "mentions": [bob.participant_id],
    }
    (shown,) = await messages_of(api, bob, room)
    assert shown["content"]["mentions"] == [bob.participant_id]


async def test_scaigrid_reply_checks_the_parent(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    other = await api.room(alice)
    parent = await api.send(alice, room, "parent")
    elsewhere = await api.send(alice, other, "elsewhere")
    r = await api.call(
        "POST", f"/v1/rooms/{room}/messages/{parent['id']}/reply", bob, json={"content": "yes"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["content"]["reply_to_event_id"] == parent["id"]
    assert r.json()["data"]["content"]["body"] == "yes"
    for bad in ("evt-missing", elsewhere["id"]):
        r = await api.call(
            "POST", f"/v1/rooms/{room}/messages/{bad}/reply", bob, json={"content": "no"}
        )
        expect_error(r, 404, "ROOM_NOT_FOUND")
    assert len(await messages_of(api, bob, room)) == 2


# --------------------------------------------------------------------------- reactions


async def test_reactions_one_per_sender_event_emoji(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "react to me")
    eid = sent["id"]
    r = await react(api, alice, room, eid, "👍")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["event_id"] == eid
    assert data["emoji"] == "👍"
    assert data["sender_id"] == alice.participant_id
    assert data["action"] == "add"
    assert data["reactions"] == {"👍": 1}
    again = (await react(api, alice, room, eid, "👍")).json()["data"]
    assert again["reactions"] == {"👍": 1}
    assert again["changed"] is False
    assert (await react(api, bob, room, eid, "👍")).json()["data"]["reactions"] == {"👍": 2}
    assert (await react(api, bob, room, eid, "🎉")).json()["data"]["reactions"] == {
        "👍": 2,
        "🎉": 1,
    }
    (shown,) = await messages_of(api, alice, room)
    assert shown["reactions"] == {"👍": 2, "🎉": 1}
    removed = await unreact(api, alice, room, eid, "👍")
    assert removed.status_code == 200, removed.text
    assert removed.json()["data"]["action"] == "remove"
    assert removed.json()["data"]["reactions"] == {"👍": 1, "🎉": 1}
    noop = (await unreact(api, alice, room, eid, "👍")).json()["data"]
    assert noop["changed"] is False
    assert noop["reactions"] == {"👍": 1, "🎉": 1}
    # Re-adding after removal works.
    assert (await react(api, alice, room, eid, "👍")).json()["data"]["reactions"]["👍"] == 2
    rows = query(
        server,
        "SELECT sender_id, emoji FROM reactions WHERE target_event_id = ? ORDER BY 1, 2",
        eid,
    )
    assert len(rows) == len({(r[0], r[1]) for r in rows}) == 3
    # Reactions do not change the message's content.
    (shown,) = await messages_of(api, alice, room)
    assert shown["content"] == text("react to me")


async def test_reaction_frames(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "x")
    async with open_stream(server, alice) as alice_ws:
        await react(api, bob, room, sent["id"], "🔥")
        frame = await alice_ws.until(is_type("swp.room.reaction"))
        assert frame["event_id"] == sent["id"]
        assert frame["sender_id"] == bob.participant_id
        assert frame["emoji"] == "🔥"
        assert frame["action"] == "add"
        assert frame["room_id"] == room
        assert frame["stream_position"] > sent["stream_position"]
        await react(api, bob, room, sent["id"], "🔥")  # no-op: no frame
        await unreact(api, bob, room, sent["id"], "🔥")
        frames = [f for f in await alice_ws.drain() if f["type"] == "swp.room.reaction"]
        assert [(f["action"], f["emoji"], f["sender_id"]) for f in frames] == [
            ("remove", "🔥", bob.participant_id)
        ]
        await unreact(api, bob, room, sent["id"], "🔥")  # no-op: no frame
        assert not [f for f in await alice_ws.drain() if f["type"] == "swp.room.reaction"]


async def test_reaction_refusals(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    carol = await api.register("carol")
    room = await api.room(alice)
    sent = await api.send(alice, room, "x")
    eid = sent["id"]
    for bad in ("", "a b", "x" * 65):
        expect_error(await react(api, alice, room, eid, bad), 400, "SW_INVALID_PARAM")
    r = await api.call("POST", f"/v1/rooms/{room}/events/{eid}/react", alice, json={})
    expect_error(r, 400, "SW_INVALID_PARAM")
    expect_error(await react(api, alice, room, "evt-nope", "x"), 404, "SW_EVENT_NOT_FOUND")
    expect_error(await react(api, carol, room, eid, "x"), 403, "SW_NOT_MEMBER")
    expect_error(await unreact(api, carol, room, eid, "x"), 403, "SW_NOT_MEMBER")
    assert query(server, "SELECT COUNT(*) FROM reactions")[0][0] == 0


# --------------------------------------------------------------------------- read markers


async def test_read_marker_moves_forward_only(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    other = await api.room(bob)
    assert await unread(api, alice, room) == {
        "room_id": room,
        "unread_count": 0,
        "last_read_event_id": None,
    }
    b1 = await api.send(bob, room, "1")
    b2 = await api.send(bob, room, "2")
    await api.send(alice, room, "mine")  # own messages never count
    b3 = await api.send(bob, room, "3")
    await api.send(bob, room, "4", as_participant_id=bob.participant_id)
    assert (await unread(api, alice, room))["unread_count"] == 4
    assert (await unread(api, bob, room))["unread_count"] == 1

    path = f"/v1/rooms/{room}/read-marker"
    moved = await api.ok("PUT", path, alice, json={"event_id": b2["id"]})
    assert moved == {"room_id": room, "event_id": b2["id"], "unread_count": 2, "moved": True}
    back = await api.ok("PUT", path, alice, json={"event_id": b1["id"]})
    assert back == {"room_id": room, "event_id": b2["id"], "unread_count": 2, "moved": False}
    same = await api.ok("PUT", path, alice, json={"event_id": b2["id"]})
    assert same["moved"] is False
    assert await unread(api, alice, room) == {
        "room_id": room,
        "unread_count": 2,
        "last_read_event_id": b2["id"],
    }
    # Redacted messages after the marker stop counting.
    await redact(api, bob, room, b3["id"])
    assert (await unread(api, alice, room))["unread_count"] == 1
    # Edits are not new messages.
    await edit(api, bob, room, b2["id"], "2 again")
    assert (await unread(api, alice, room))["unread_count"] == 1

    expect_error(await api.call("PUT", path, alice, json={}), 400, "SW_INVALID_PARAM")
    expect_error(
        await api.call("PUT", path, alice, json={"event_id": "evt-nope"}),
        404,
        "SW_EVENT_NOT_FOUND",
    )
    elsewhere = await api.send(bob, other, "other room")
    expect_error(
        await api.call("PUT", path, alice, json={"event_id": elsewhere["id"]}),
        404,
        "SW_EVENT_NOT_FOUND",
    )
    expect_error(
        await api.call("PUT", path, carol, json={"event_id": b1["id"]}), 403, "SW_NOT_MEMBER"
    )
    expect_error(await api.call("GET", f"/v1/rooms/{room}/unread", carol), 403, "SW_NOT_MEMBER")


async def test_read_marker_frame_goes_to_the_readers_connections_only(
    server: Running, api: Api
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    b1 = await api.send(bob, room, "1")
    await api.send(bob, room, "2")
    login = await api.ok(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": "alice", "password": "password123"},
    )
    second_token = login["access_token"]
    async with (
        open_stream(server, alice) as a1,
        open_stream(server, alice, token=second_token) as a2,
        open_stream(server, bob) as b,
    ):
        await api.ok("PUT", f"/v1/rooms/{room}/read-marker", alice, json={"event_id": b1["id"]})
        for ws in (a1, a2):
            frame = await ws.until(is_type("swp.room.read_marker"))
            assert frame["room_id"] == room
            assert frame["event_id"] == b1["id"]
            assert frame["participant_id"] == alice.participant_id
            assert frame["unread_count"] == 1
        assert not [f for f in await b.drain() if f["type"] == "swp.room.read_marker"]
        # And no persisted event was made for it.
        assert not [f for f in await a1.drain() if f.get("stream_position")]


async def test_read_marker_on_an_edit_sits_at_its_message(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    b1 = await api.send(bob, room, "1")
    await api.send(bob, room, "2")
    await api.send(bob, room, "3")
    await edit(api, bob, room, b1["id"], "1 edited")
    (edit_row,) = query(server, "SELECT event_id FROM events WHERE type = 'swp.room.edit'")
    path = f"/v1/rooms/{room}/read-marker"
    marker = await api.ok("PUT", path, alice, json={"event_id": edit_row["event_id"]})
    # The marker names the message, and counts what follows the message.
    assert marker["event_id"] == b1["id"]
    assert marker["unread_count"] == 2
    assert await unread(api, alice, room) == {
        "room_id": room,
        "unread_count": 2,
        "last_read_event_id": b1["id"],
    }
    again = await api.ok("PUT", path, alice, json={"event_id": b1["id"]})
    assert again["moved"] is False
    assert again["unread_count"] == 2


# ------------------------------------------------------- idempotency: authorisation, single flight


async def test_idempotency_does_not_leak_other_participants_events(
    server: Running, api: Api
) -> None:
    alice = await api.register("alice")
    mallory = await api.register("mallory")
    private = await api.room(alice)
    own = await api.room(mallory)
    secret = {"content": text("alice's private note"), "event_uuid": "1"}
    await api.ok("POST", f"/v1/rooms/{private}/send", alice, json=secret)
    probe = {
        "content": text("x"),
        "event_uuid": "1",
        "as_participant_id": alice.participant_id,
    }
    r = await api.call("POST", f"/v1/rooms/{own}/send", mallory, json=probe)
    assert "private note" not in r.text
    # Alice is not in Mallory's room, so she cannot be sent as there.
    expect_error(r, 404, "SW_PARTICIPANT_NOT_FOUND")


async def test_concurrent_duplicates_never_hit_the_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=2)
    async with server_and_api(settings) as (_, api):
        alice = await api.register("alice")
        room = await api.room(alice)
        codes: list[int] = []

        async def one() -> None:
            r = await api.call(
                "POST",
                f"/v1/rooms/{room}/send",
                alice,
                json={"content": text("dup"), "event_uuid": "d"},
            )
            codes.append(r.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
        assert codes == [200] * 6
        # One message stored, so one slot of two used.
        await api.send(alice, room, "fresh")
