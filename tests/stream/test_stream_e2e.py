"""End-to-end: real WebSocket clients against the in-process server (CONTRACT 4 and 5).

Clients are ``websockets.trio.client.connect`` (auto-pong on) or, where a test
needs a client that misbehaves at the protocol level (never answers pings),
a raw sans-I/O ``ClientProtocol`` over a trio TCP stream.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.trio.client import ClientConnection, connect
from websockets.uri import parse_uri

from homeserver.app import Running
from tests.support import EVENT_FIELDS, ISO_MS, Api, User, api_for, make_settings, start_server

STEP = 10.0  # upper bound for any single wait; tests finish far sooner


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    """The default server, without the per-sender rate limit (tests send a lot)."""
    async with start_server(make_settings(tmp_path / "data", rate_limit_messages=0)) as running:
        yield running


# --------------------------------------------------------------------------- helpers


def ws_url(server: Running, token: str | None = None, since: int | None = None) -> str:
    query = []
    if token is not None:
        query.append(f"token={quote(token)}")
    if since is not None:
        query.append(f"since={since}")
    return f"ws://{server.host}:{server.port}/v1/stream" + ("?" + "&".join(query) if query else "")


@asynccontextmanager
async def open_ws(
    server: Running,
    token: str | None = None,
    *,
    since: int | None = None,
    headers: dict[str, str] | None = None,
    stream: trio.SocketStream | None = None,
    max_queue: int = 16,
) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(server, token, since),
        additional_headers=headers,
        compression=None,
        ping_interval=None,
        open_timeout=STEP,
        close_timeout=2,
        max_size=None,
        max_queue=max_queue,
        stream=stream,
        proxy=None,
    ) as ws:
        yield ws


async def recv(
    ws: ClientConnection, *, within: float = STEP, skip: tuple[str, ...] = ("presence",)
) -> dict[str, Any]:
    """The next frame, skipping presence (it comes and goes with connections)."""
    with trio.fail_after(within):
        while True:
            message = await ws.recv()
            assert isinstance(message, str), message
            frame = json.loads(message)
            assert isinstance(frame, dict)
            if frame.get("type") not in skip:
                return frame


async def hello(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws, skip=())
    assert frame["type"] == "hello", frame
    return frame


async def recv_type(ws: ClientConnection, *types: str) -> dict[str, Any]:
    """The next frame of one of ``types``, skipping others (acks, typing...)."""
    with trio.fail_after(STEP):
        while True:
            frame = await recv(ws)
            if frame["type"] in types:
                return frame


async def send_json(ws: ClientConnection, payload: Any) -> None:
    await ws.send(json.dumps(payload))


async def pong(ws: ClientConnection) -> dict[str, Any]:
    """Ping with a JSON frame; the next frame must be the pong."""
    await send_json(ws, {"type": "ping"})
    frame = await recv(ws)
    assert frame["type"] == "pong", frame
    assert ISO_MS.match(frame["ts"])
    return frame


async def read_to_close(ws: ClientConnection) -> tuple[list[Any], ConnectionClosed]:
    """Every message left, then how the connection closed."""
    messages: list[Any] = []
    with trio.fail_after(STEP):
        while True:
            try:
                messages.append(await ws.recv())
            except ConnectionClosed as exc:
                return messages, exc


async def expect_close(ws: ClientConnection, code: int, reason: str) -> None:
    _, closed = await read_to_close(ws)
    rcvd = closed.rcvd
    assert rcvd is not None, closed
    assert (rcvd.code, rcvd.reason) == (code, reason)


async def login(api: Api, user: User) -> str:
    data = await api.ok(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": user.username, "password": "password123"},
    )
    token = data["access_token"]
    assert isinstance(token, str)
    assert token != user.access_token
    return token


async def sync(api: Api, user: User, since: int, *, limit: int = 500, timeout_ms: int = 0) -> Any:
    path = f"/v1/sync?since={since}&limit={limit}&timeout={timeout_ms}"
    return await api.ok("GET", path, user)


async def sync_all(api: Api, user: User, since: int) -> list[dict[str, Any]]:
    """Every event visible to ``user`` after ``since``, following the cursor."""
    events: list[dict[str, Any]] = []
    while True:
        page = await sync(api, user, since, limit=100)
        events.extend(page["events"])
        since = int(page["next_cursor"])
        if not page["has_more"]:
            return events


class RawClient:
    """A sans-I/O WebSocket client that only does what it is told (never pongs)."""

    def __init__(self, stream: trio.SocketStream, proto: ClientProtocol) -> None:
        self.stream = stream
        self.proto = proto
        self._frames: list[Frame] = []

    @classmethod
    async def open(cls, server: Running, token: str) -> RawClient:
        stream = await trio.open_tcp_stream(server.host, server.port)
        proto = ClientProtocol(parse_uri(ws_url(server, token)), max_size=None)
        proto.send_request(proto.connect())
        await stream.send_all(b"".join(proto.data_to_send()))
        client = cls(stream, proto)
        with trio.fail_after(STEP):
            while True:
                data = await stream.receive_some(65536)
                assert data, "server closed during the handshake"
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Response):
                        assert event.status_code == 101
                    elif isinstance(event, Frame):
                        client._frames.append(event)
                if proto.handshake_exc is not None:
                    raise proto.handshake_exc
                if proto.state.name == "OPEN":
                    proto.data_to_send()  # nothing: we never answer anything
                    return client

    async def next_frame(self) -> Frame | None:
        """The next frame from the server (pings included); ``None`` at EOF."""
        while not self._frames:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.proto.receive_data(data)
            self._frames.extend(e for e in self.proto.events_received() if isinstance(e, Frame))
        return self._frames.pop(0)

    async def aclose(self) -> None:
        await self.stream.aclose()


# --------------------------------------------------------------------------- auth, hello


async def test_token_in_query_and_header_then_hello(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    await api.send(alice, room, "before")
    position = server.hub.position
    second_token = await login(api, alice)

    async with open_ws(server, alice.access_token) as ws:
        first = await hello(ws)
    assert set(first) == {
        "type",
        "session_id",
        "server_name",
        "tenant_id",
        "participant_id",
        "stream_position",
        "ts",
    }
    assert first["participant_id"] == alice.participant_id
    assert first["server_name"] == "localhost"
    assert first["tenant_id"] == "ten_default"
    assert first["stream_position"] == position
    assert isinstance(first["session_id"], str)
    assert first["session_id"]
    assert ISO_MS.match(first["ts"]), first["ts"]

    headers = {"Authorization": f"Bearer {second_token}"}
    async with open_ws(server, headers=headers) as ws:
        second = await hello(ws)
        await pong(ws)
    assert second["participant_id"] == alice.participant_id
    assert second["session_id"] != first["session_id"]


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, None),
        ("not-a-token", None),
        (None, {"Authorization": "Bearer not-a-token"}),
        (None, {"Authorization": "Basic YWxpY2U6cGFzcw=="}),
    ],
    ids=["missing", "bad-query", "bad-header", "not-bearer"],
)
async def test_bad_or_missing_token_closes_4001(
    server: Running, token: str | None, headers: dict[str, str] | None
) -> None:
    start = trio.current_time()
    async with open_ws(server, token, headers=headers) as ws:
        await expect_close(ws, 4001, "SW_AUTH_INVALID_TOKEN")
    # The server ends the TCP connection right after the closing handshake.
    assert trio.current_time() - start < 2
    assert server.hub.connection_count() == 0


# --------------------------------------------------------------------------- live events


async def test_live_events_reach_every_member_in_order(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    async with (
        open_ws(server, alice.access_token) as wa,
        open_ws(server, bob.access_token) as wb,
        open_ws(server, carol.access_token) as wc,
    ):
        for ws in (wa, wb, wc):
            await hello(ws)
        sent = [await api.send(alice if i % 2 else bob, room, f"m{i}") for i in range(6)]
        positions = [e["stream_position"] for e in sent]
        assert positions == sorted(positions)
        for ws in (wa, wb):
            got = [await recv(ws) for _ in sent]
            assert got == sent
            for frame in got:
                assert set(frame) >= EVENT_FIELDS, EVENT_FIELDS - set(frame)
                assert frame["type"] == "swp.room.message"
                assert frame["room_id"] == room
                assert ISO_MS.match(frame["ts"])
                assert isinstance(frame["origin_ts"], int)
        # carol is in no room: her next frame is the answer to her ping.
        await pong(wc)


async def test_since_replay_then_live_no_gap_no_duplicate_under_concurrent_sends(
    server: Running, api: Api
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    other = await api.room(bob)  # bob's own room: bob writes there too
    earlier = [await api.send(alice, room, f"early {i}") for i in range(20)]
    since = earlier[9]["stream_position"]
    total = 300
    sent_count = 0
    last_position = 0
    done = trio.Event()
    marks = {40: trio.Event(), 150: trio.Event()}  # sends so far -> a watcher connects

    async def sender(user: User, room_id: str, n: int) -> None:
        nonlocal sent_count, last_position
        for i in range(n):
            event = await api.send(user, room_id, f"{user.username} {i}")
            last_position = max(last_position, event["stream_position"])
            sent_count += 1
            if sent_count in marks:
                marks[sent_count].set()

    async def senders() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(sender, alice, room, total // 2)
            inner.start_soon(sender, bob, room, total // 3)
            inner.start_soon(sender, bob, other, total - total // 2 - total // 3)
        done.set()

    async def watch(token: str, wait_for: int, into: list[int]) -> None:
        await marks[wait_for].wait()
        assert not done.is_set()
        async with open_ws(server, token, since=since) as ws:
            first = await hello(ws)
            assert first["stream_position"] >= since
            with trio.fail_after(30):
                while not (done.is_set() and into and into[-1] >= last_position):
                    with trio.move_on_after(0.05):  # recv is cancel-safe
                        into.append((await recv(ws))["stream_position"])

    bob_positions: list[int] = []
    bob2_positions: list[int] = []
    bob2 = await login(api, bob)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(senders)
            nursery.start_soon(watch, bob.access_token, 40, bob_positions)
            nursery.start_soon(watch, bob2, 150, bob2_positions)

    assert sent_count == total
    expected = [e["stream_position"] for e in await sync_all(api, bob, since)]
    assert len(expected) == total + 10
    assert bob_positions == expected
    assert bob2_positions == expected


# --------------------------------------------------------------------------- client frames


async def test_ping_pong_and_typing(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    async with (
        open_ws(server, alice.access_token) as wa,
        open_ws(server, bob.access_token) as wb,
        open_ws(server, carol.access_token) as wc,
    ):
        for ws in (wa, wb, wc):
            await hello(ws)
        await pong(wa)

        await send_json(wa, {"type": "typing", "room_id": room, "typing": True})
        typing = await recv(wb)
        assert typing["type"] == "typing"
        assert (typing["room_id"], typing["participant_id"], typing["typing"]) == (
            room,
            alice.participant_id,
            True,
        )
        await send_json(wa, {"type": "typing", "room_id": room, "typing": False})
        assert (await recv(wb))["typing"] is False
        # The sender gets no typing frame of its own: its next frame is the pong.
        await pong(wa)

        await send_json(wc, {"type": "typing", "room_id": room, "typing": True})
        error = await recv(wc)
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_NOT_MEMBER"
        assert error["error"]["message"]
        await pong(wc)
        await pong(wb)  # nothing from carol reached bob


async def test_send_frame_ack_and_broadcast(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    async with (
        open_ws(server, alice.access_token) as wa,
        open_ws(server, bob.access_token) as wb,
        open_ws(server, carol.access_token) as wc,
    ):
        for ws in (wa, wb, wc):
            await hello(ws)
        content = {"msgtype": "swp.text", "body": "over the stream"}
        await send_json(wa, {"type": "send", "req_id": "r-1", "room_id": room, "content": content})
        frames = [await recv(wa), await recv(wa)]
        acks = [f for f in frames if f["type"] == "ack"]
        events = [f for f in frames if f["type"] == "swp.room.message"]
        assert len(acks) == 1, frames
        assert len(events) == 1, frames
        ack = acks[0]
        assert ack["req_id"] == "r-1"
        event = ack["event"]
        assert event == events[0]
        assert set(event) >= EVENT_FIELDS
        assert event["content"] == content
        assert event["sender_id"] == alice.participant_id
        assert await recv(wb) == event

        # Idempotent retry: the same event_uuid acks the same event.
        frame = {"type": "send", "req_id": "r-2", "room_id": room, "content": content}
        await send_json(wa, {**frame, "event_uuid": "u-1"})
        first = await recv_type(wa, "ack")
        await send_json(wa, {**frame, "req_id": "r-3", "event_uuid": "u-1"})
        again = await recv_type(wa, "ack")
        assert (first["req_id"], again["req_id"]) == ("r-2", "r-3")
        assert again["event"]["id"] == first["event"]["id"]

        await send_json(wc, {"type": "send", "req_id": "r-9", "room_id": room, "content": content})
        error = await recv(wc)
        assert error["type"] == "error"
        assert error["req_id"] == "r-9"
        assert error["error"]["code"] == "SW_NOT_MEMBER"
        assert error["error"]["message"]
        await pong(wc)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{not json", "SW_BAD_JSON"),
        ("[1, 2, 3]", "SW_BAD_JSON"),
        ('"ping"', "SW_BAD_JSON"),
        ('{"type": "subscribe"}', "SW_UNKNOWN_FRAME"),
        ('{"no_type": true}', "SW_UNKNOWN_FRAME"),
        ('{"type": "typing", "room_id": "room-x"}', "SW_INVALID_PARAM"),
        ('{"type": "send", "req_id": "r-5", "room_id": "room-x"}', "SW_INVALID_PARAM"),
        (b"\x00\x01binary", "SW_UNKNOWN_FRAME"),
    ],
    ids=["bad-json", "array", "string", "unknown", "no-type", "typing", "send", "binary"],
)
async def test_malformed_frames_get_error_and_socket_stays_open(
    server: Running, api: Api, payload: str | bytes, code: str
) -> None:
    alice = await api.register("alice")
    async with open_ws(server, alice.access_token) as ws:
        await hello(ws)
        await ws.send(payload)
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == code
        if isinstance(payload, str) and '"req_id"' in payload:
            assert error["req_id"] == "r-5"
        await pong(ws)
        await pong(ws)


async def test_fragmented_message_is_reassembled(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    async with open_ws(server, alice.access_token) as ws:
        await hello(ws)
        await ws.send(['{"type"', ': "pi', 'ng"}'])
        frame = await recv(ws)
        assert frame["type"] == "pong"
        await pong(ws)


# --------------------------------------------------------------------------- keepalive


async def test_keepalive_ping_timeout_and_healthy_client(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", ws_ping_interval=0.5)
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        bob = await api.register("bob")
        raw = await RawClient.open(running, alice.access_token)
        start = trio.current_time()
        pings = 0
        close: Close | None = None
        async with open_ws(running, bob.access_token) as healthy:
            await hello(healthy)
            with trio.fail_after(STEP):
                while True:
                    frame = await raw.next_frame()
                    assert frame is not None, "EOF before a close frame"
                    if frame.opcode is Opcode.PING:
                        pings += 1
                    elif frame.opcode is Opcode.CLOSE:
                        close = Close.parse(frame.data)
                        break
                # After the close frame the server ends the stream.
                assert await raw.next_frame() is None
            elapsed = trio.current_time() - start
            await raw.aclose()
            assert close is not None
            assert (close.code, close.reason) == (4003, "ping_timeout")
            assert pings == 1
            assert 0.9 <= elapsed < 3, elapsed
            # The auto-ponging client is still fine several intervals later.
            await trio.sleep(2.2 - elapsed if elapsed < 2.2 else 0)
            await pong(healthy)
            assert running.hub.connection_count(bob.participant_id) == 1
            assert running.hub.connection_count(alice.participant_id) == 0


# --------------------------------------------------------------------------- duplicates


async def test_duplicate_connection_closes_the_older(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    async with open_ws(server, alice.access_token) as older:
        await hello(older)
        async with open_ws(server, alice.access_token) as newer:
            await hello(newer)
            await expect_close(older, 4003, "duplicate_connection")
            await pong(newer)
            # Another token of the same user coexists with it.
            other_token = await login(api, alice)
            async with open_ws(server, other_token) as other:
                await hello(other)
                sent = await api.send(alice, room, "to both")
                assert await recv(newer) == sent
                assert await recv(other) == sent
                await pong(newer)
                await pong(other)
                assert server.hub.connection_count(alice.participant_id) == 2


# --------------------------------------------------------------------------- slow consumer


async def test_slow_consumer_is_closed_and_others_keep_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", ws_queue_bytes=65536, rate_limit_messages=0)
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        fast = await api.register("fast")
        slow = await api.register("slow")
        room = await api.room(alice, fast, slow)
        body = "x" * 60_000

        # The slow client: a real websockets client on a socket with a small
        # receive buffer, which stops reading once one message is buffered.
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        await sock.connect((running.host, running.port))
        slow_stream = trio.SocketStream(sock)

        received: list[dict[str, Any]] = []
        sent: list[dict[str, Any]] = []
        sending_done = trio.Event()
        caught_up = trio.Event()

        async def read_fast(ws: ClientConnection) -> None:
            while True:
                received.append(await recv(ws, within=60))
                if sending_done.is_set() and len(received) == len(sent):
                    caught_up.set()

        async with (
            open_ws(running, slow.access_token, stream=slow_stream, max_queue=1) as ws_slow,
            open_ws(running, fast.access_token) as ws_fast,
        ):
            await hello(ws_slow)
            await hello(ws_fast)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast, ws_fast)
                with trio.fail_after(60):
                    extra = 20  # keep going after the slow one is cut off
                    for i in range(400):
                        sent.append(await api.send(alice, room, f"{i} {body}"))
                        if running.hub.statistics()["slow_consumers"] >= 1:
                            extra -= 1
                            if extra == 0:
                                break
                sending_done.set()
                if len(received) < len(sent):
                    with trio.fail_after(STEP):
                        await caught_up.wait()
                nursery.cancel_scope.cancel()  # recv is cancel-safe
            assert running.hub.statistics()["slow_consumers"] == 1
            assert [e["id"] for e in received] == [e["id"] for e in sent]
            assert received == sent

            # The slow client, reading at last: a prefix of the events, in
            # order and intact, then the close frame (or a closed connection).
            left, closed = await read_to_close(ws_slow)
            frames = [json.loads(m) for m in left]
            got = [f["stream_position"] for f in frames if f["type"] == "swp.room.message"]
            rcvd = closed.rcvd
            if rcvd is not None:
                assert (rcvd.code, rcvd.reason) == (4003, "slow_consumer")
            positions = [e["stream_position"] for e in sent]
            assert got == positions[: len(got)]
            assert len(got) < len(sent)
        # The fast client stayed attached; the slow one is gone.
        assert running.hub.connection_count(slow.participant_id) == 0


# --------------------------------------------------------------------------- membership


async def test_membership_changes_apply_at_their_position(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    room = await api.room(alice, bob)
    side = await api.room(alice, bob, carol)
    async with (
        open_ws(server, bob.access_token) as wb,
        open_ws(server, carol.access_token) as wc,
    ):
        await hello(wb)
        await hello(wc)
        # Kick: bob gets the event that removed him, then nothing of that room.
        await api.ok(
            "POST", f"/v1/rooms/{room}/kick", alice, json={"participant_id": bob.participant_id}
        )
        kick = await recv(wb)
        assert kick["type"] == "swp.room.member"
        assert kick["room_id"] == room
        assert kick["content"]["participant_id"] == bob.participant_id
        assert kick["content"]["membership"] == "leave"
        await api.send(alice, room, "after the kick")
        sentinel = await api.send(alice, side, "sentinel")
        assert await recv(wb) == sentinel
        assert await recv(wc) == sentinel

        # Join: carol gets her join event first, then what follows.
        await api.send(alice, room, "before carol")
        await api.ok(
            "POST",
            f"/v1/rooms/{room}/members",
            alice,
            status=201,
            json={"id": carol.participant_id},
        )
        join = await recv(wc)
        assert join["type"] == "swp.room.member"
        assert join["room_id"] == room
        assert join["content"]["participant_id"] == carol.participant_id
        assert join["content"]["membership"] == "join"
        welcome = await api.send(alice, room, "welcome")
        assert await recv(wc) == welcome
        # bob saw nothing of any of it.
        await pong(wb)


# --------------------------------------------------------------------------- /v1/sync


async def test_sync_catch_up_and_paging(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = [await api.send(alice, room, f"m{i}") for i in range(5)]

    everything = await sync(api, bob, 0)
    events = everything["events"]
    positions = [e["stream_position"] for e in events]
    assert positions == sorted(set(positions))
    assert everything["has_more"] is False
    assert everything["next_cursor"] == str(positions[-1])
    assert events[-5:] == sent
    assert all(set(e) >= EVENT_FIELDS for e in events)
    assert {e["room_id"] for e in events} == {room}

    paged: list[dict[str, Any]] = []
    since = 0
    while True:
        r = await api.call("GET", f"/v1/sync?since={since}&limit=2&timeout=0", bob)
        body = r.json()
        page = body["data"]
        assert len(page["events"]) <= 2
        assert body["meta"]["has_more"] == page["has_more"]
        assert body["meta"]["next_cursor"] == page["next_cursor"]
        paged.extend(page["events"])
        if not page["has_more"]:
            break
        assert len(page["events"]) == 2
        assert page["next_cursor"] == str(page["events"][-1]["stream_position"])
        since = int(page["next_cursor"])
    assert paged == events

    tail = await sync(api, bob, sent[2]["stream_position"])
    assert tail["events"] == sent[3:]


async def test_sync_visibility_follows_membership(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    carol = await api.register("carol")
    dave = await api.register("dave")
    room = await api.room(alice, carol)
    before = await api.send(alice, room, "carol sees this")
    await api.ok("POST", f"/v1/rooms/{room}/leave", carol)
    after = await api.send(alice, room, "carol does not")

    seen = await sync_all(api, carol, 0)
    ids = [e["id"] for e in seen]
    assert before["id"] in ids
    assert after["id"] not in ids
    last = seen[-1]
    assert last["type"] == "swp.room.member"
    assert last["content"]["participant_id"] == carol.participant_id
    assert last["content"]["membership"] == "leave"
    assert all(e["stream_position"] < after["stream_position"] for e in seen)

    assert [e for e in await sync_all(api, dave, 0) if e["room_id"] == room] == []
    assert after["id"] in [e["id"] for e in await sync_all(api, alice, 0)]


async def test_sync_long_poll_returns_when_an_event_arrives(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    since = server.hub.position
    result: dict[str, Any] = {}

    async def poll() -> None:
        start = trio.current_time()
        result["page"] = await sync(api, bob, since, timeout_ms=10_000)
        result["elapsed"] = trio.current_time() - start

    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.3)
            assert "page" not in result  # still waiting
            sent = await api.send(alice, room, "wake up")
    assert result["page"]["events"] == [sent]
    assert result["page"]["next_cursor"] == str(sent["stream_position"])
    assert 0.3 <= result["elapsed"] < 3


async def test_sync_timeout_zero_returns_immediately(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    await api.room(alice)
    since = server.hub.position
    start = trio.current_time()
    page = await sync(api, alice, since, timeout_ms=0)
    assert trio.current_time() - start < 1
    assert page == {"events": [], "next_cursor": str(since), "has_more": False}
