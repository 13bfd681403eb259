"""Timeouts under trio's MockClock (virtual time, no sleeps in real time).

The stream driver runs over in-memory streams (``trio.testing``) with a fake
:class:`StreamServices` and a real :class:`Hub`; the client side is websockets'
sans-I/O ``ClientProtocol``. The long-poll is ``MessageService.sync`` over a
stub reader and a real hub.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from homeserver.identity.auth import Principal
from homeserver.live.hub import Hub
from homeserver.rooms.messages import MessageLimits, MessageService
from homeserver.store.database import Readers, Writer
from homeserver.stream.connection import (
    CLOSE_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    Registry,
    StreamSettings,
    encode_text_frame,
    serve_stream,
)
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, EventType

ROOM = "room-1"
ALICE = "p-alice"
INTERVAL = 30.0
VIRTUAL_LIMIT = 10 * 3600.0


def make_event(position: int, *, room_id: str = ROOM, size: int = 16) -> Event:
    return Event(
        stream_position=position,
        event_id=f"evt-{position}",
        room_id=room_id,
        type=EventType.MESSAGE,
        sender_id="p-bob",
        actor_id="p-bob",
        content={"msgtype": "swp.text", "body": "x" * size},
        origin_ts_ms=1_700_000_000_000 + position,
        depth=position,
        prev_event_ids=(),
        content_hash="h",
    )


class FakeServices:
    """StreamServices over an in-memory event list ("committed" events)."""

    tenant_id = "tenant"
    server_name = "test.local"

    def __init__(self) -> None:
        self.store: list[Event] = []
        self.replay_calls = 0
        self.expires_in: float | None = None  # seconds the credential has left
        self.revoked = False  # the credential was revoked (after authenticate)
        self.typed: list[bool] = []

    async def authenticate(self, token: str | None) -> Principal:
        if token == "good":
            return Principal(ALICE, "key-good", "access")
        if token == "explode":
            raise RuntimeError("database is locked")
        raise ApiError(ErrorCode.SW_AUTH_INVALID_TOKEN, "bad token")

    async def send_message(
        self,
        principal: Principal,
        room_id: str,
        content: dict[str, Any],
        event_uuid: str | None,
        as_participant_id: str | None,
    ) -> Event:
        if room_id == "room-explode":
            raise RuntimeError("unexpected failure")
        raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")

    async def check_credential(self, principal: Principal) -> None:
        if self.revoked:
            raise ApiError(ErrorCode.SW_AUTH_INVALID_TOKEN, "the credential was revoked")

    def seconds_left(self, principal: Principal) -> float | None:
        return self.expires_in

    async def set_typing(self, principal: Principal, room_id: str, typing: bool) -> None:
        await self.check_credential(principal)
        self.typed.append(typing)

    async def replay(self, participant_id: str, since: int, limit: int) -> list[Event]:
        self.replay_calls += 1
        await trio.sleep(0.001)  # a database read takes a moment
        return [e for e in self.store if e.stream_position > since][:limit]

    def now_iso(self) -> str:
        return "2026-01-01T00:00:00.000Z"


def settings(**overrides: Any) -> StreamSettings:
    base: dict[str, Any] = {
        "ping_interval": INTERVAL,
        "queue_bytes": 65536,
        "max_frame_bytes": 1 << 20,
        "close_duplicate": True,
    }
    base.update(overrides)
    return StreamSettings(**base)


class MemClient:
    """A sans-I/O WebSocket client over an in-memory stream."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, *, answer: bool = True) -> None:
        self.stream = stream
        self.answer = answer  # send what the protocol wants (pongs, close replies)
        self.proto: ClientProtocol | None = None
        self.frames: deque[Frame] = deque()
        self.eof = False

    async def handshake(self, query: str = "token=good") -> None:
        self.proto = ClientProtocol(parse_uri(f"ws://test.local/v1/stream?{query}"), max_size=None)
        self.proto.send_request(self.proto.connect())
        await self._send_pending()
        while self.proto.state is State.CONNECTING:
            await self._feed()
        assert self.proto.state is State.OPEN

    @property
    def p(self) -> ClientProtocol:
        assert self.proto is not None
        return self.proto

    async def _send_pending(self) -> None:
        for chunk in self.p.data_to_send():
            try:
                if chunk:
                    await self.stream.send_all(chunk)
                else:
                    await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _feed(self) -> None:
        data = await self.stream.receive_some(65536)
        if data:
            self.p.receive_data(data)
        else:
            self.eof = True
            self.p.receive_eof()
        for event in self.p.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
            else:
                assert isinstance(event, Response)
                assert event.status_code == 101
        if self.answer:
            await self._send_pending()

    async def next_frame(self) -> Frame | None:
        """The next frame (control frames included); ``None`` at end of stream."""
        while not self.frames:
            if self.eof:
                return None
            await self._feed()
        return self.frames.popleft()

    async def next_json(self) -> dict[str, Any]:
        while True:
            frame = await self.next_frame()
            assert frame is not None, "end of stream"
            if frame.opcode is Opcode.TEXT:
                decoded = orjson.loads(frame.data)
                assert isinstance(decoded, dict)
                return decoded
            assert frame.opcode in (Opcode.PING, Opcode.PONG), frame

    async def send_text(self, text: str) -> None:
        self.p.send_text(text.encode())
        await self._send_pending()

    async def close(self, code: int = 1000) -> None:
        self.p.send_close(code, "bye")
        await self._send_pending()

    async def wait_close(self) -> Close:
        """Read to the close frame, then to the end of the stream."""
        close: Close | None = None
        while True:
            frame = await self.next_frame()
            if frame is None:
                assert close is not None, "end of stream without a close frame"
                return close
            if frame.opcode is Opcode.CLOSE:
                close = Close.parse(frame.data)


class Harness:
    def __init__(self, hub: Hub, services: FakeServices) -> None:
        self.hub = hub
        self.services = services
        self.registry = Registry()
        self.ended_at: float | None = None
        self.done = trio.Event()

    async def wait_done(self) -> float:
        await self.done.wait()
        assert self.ended_at is not None
        return self.ended_at


@asynccontextmanager
async def serving(
    stream_settings: StreamSettings | None = None,
    *,
    pair: Callable[
        [], tuple[trio.StapledStream[Any, Any], trio.StapledStream[Any, Any]]
    ] = trio.testing.memory_stream_pair,
    answer: bool = True,
    position: int = 0,
    services: FakeServices | None = None,
) -> AsyncIterator[tuple[Harness, MemClient]]:
    """serve_stream on one end of a stream pair; the other end for the client."""
    hub = Hub("tenant", encode_text_frame)
    hub.load_memberships([(ROOM, ALICE)], position)
    services = services or FakeServices()
    harness = Harness(hub, services)
    client_end, server_end = pair()

    async def serve() -> None:
        try:
            await serve_stream(
                server_end,
                b"",
                hub=hub,
                registry=harness.registry,
                services=services,
                settings=stream_settings or settings(),
            )
        finally:
            harness.ended_at = trio.current_time()
            harness.done.set()
            await trio.aclose_forcefully(server_end)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with trio.fail_after(VIRTUAL_LIMIT):  # virtual seconds: cheap, and catches hangs
            yield harness, MemClient(client_end, answer=answer)
        nursery.cancel_scope.cancel()


async def read_hello(client: MemClient) -> dict[str, Any]:
    frame = await client.next_frame()
    assert frame is not None
    assert frame.opcode is Opcode.TEXT
    hello = orjson.loads(frame.data)
    assert hello["type"] == "hello", hello
    return cast("dict[str, Any]", hello)


# --------------------------------------------------------------------------- keepalive


async def test_no_pong_closes_4003_ping_timeout_after_two_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(answer=False) as (harness, client):
        await client.handshake()
        start = trio.current_time()
        await read_hello(client)
        ping = await client.next_frame()
        assert ping is not None
        assert ping.opcode is Opcode.PING
        assert trio.current_time() - start == pytest.approx(INTERVAL)
        close = await client.wait_close()
        assert (close.code, close.reason) == (4003, "ping_timeout")
        assert trio.current_time() - start == pytest.approx(2 * INTERVAL)
        assert harness.hub.connection_count() == 0
        # The client never completes the closing handshake: the server gives
        # up CLOSE_TIMEOUT after starting it.
        ended = await harness.wait_done()
        assert ended - start == pytest.approx(2 * INTERVAL + CLOSE_TIMEOUT)


async def test_answered_pings_keep_the_connection_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (harness, client):
        await client.handshake()
        start = trio.current_time()
        await read_hello(client)
        pings = 0
        with trio.move_on_after(100 * INTERVAL + 1):
            while True:
                frame = await client.next_frame()
                assert frame is not None, "the server ended the connection"
                assert frame.opcode is Opcode.PING, frame
                pings += 1
        assert pings == 100
        assert not harness.done.is_set()
        assert harness.hub.connection_count(ALICE) == 1
        # JSON ping still answered after all that time.
        await client.send_text('{"type": "ping"}')
        assert (await client.next_json())["type"] == "pong"
        # A client-initiated close ends the connection at once (no timeout).
        closing_at = trio.current_time()
        await client.close()
        close = await client.wait_close()
        assert close.code == 1000
        ended = await harness.wait_done()
        assert ended == pytest.approx(closing_at)
        assert trio.current_time() - start > 100 * INTERVAL


async def test_pong_late_within_the_interval_is_fine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A pong any time before the next tick counts (here: just before it)."""
    async with serving(answer=False) as (harness, client):
        await client.handshake()
        await read_hello(client)
        for _ in range(5):
            ping = await client.next_frame()
            assert ping is not None
            assert ping.opcode is Opcode.PING
            await trio.sleep(INTERVAL - 0.01)
            client.p.send_pong(ping.data)
            for chunk in client.p.data_to_send():
                await client.stream.send_all(chunk)
        assert harness.hub.connection_count(ALICE) == 1
        assert not harness.done.is_set()


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /v1/stream?token=good HTTP/1.1\r\nHost: test.local\r\n"],
    ids=["silent", "partial-headers"],
)
async def test_handshake_timeout(autojump_clock: trio.testing.MockClock, sent: bytes) -> None:
    async with serving() as (harness, client):
        start = trio.current_time()
        if sent:
            await client.stream.send_all(sent)
        ended = await harness.wait_done()
        assert ended - start == pytest.approx(HANDSHAKE_TIMEOUT)
        assert await client.stream.receive_some(1024) == b""  # nothing, then closed
        assert harness.hub.connection_count() == 0


async def test_garbage_request_is_dropped_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (harness, client):
        start = trio.current_time()
        await client.stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        ended = await harness.wait_done()
        assert ended - start < 1


async def test_bad_token_closes_4001_without_lingering(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (harness, client):
        await client.handshake("token=bad")
        start = trio.current_time()
        close = await client.wait_close()
        assert (close.code, close.reason) == (4001, "SW_AUTH_INVALID_TOKEN")
        ended = await harness.wait_done()
        assert ended - start < 1
        assert harness.hub.connection_count() == 0


# --------------------------------------------------------------------------- slow consumer


def flood(hub: Hub, frames: int, size: int = 10_000) -> None:
    for i in range(frames):
        hub.send_ephemeral([ALICE], {"type": "swp.ai.status", "i": i, "pad": "y" * size})


async def test_slow_consumer_is_closed_and_never_pins_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(pair=trio.testing.lockstep_stream_pair) as (harness, client):
        await client.handshake()
        await read_hello(client)
        flood(harness.hub, 10)  # ~100 kB for a 64 kB queue; the client reads nothing
        assert harness.hub.stats.slow_consumers == 1
        assert harness.hub.connection_count() == 0
        overflowed_at = trio.current_time()
        ended = await harness.wait_done()
        assert ended - overflowed_at == pytest.approx(CLOSE_TIMEOUT)


async def test_slow_consumer_reading_late_finds_the_close_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(pair=trio.testing.lockstep_stream_pair) as (harness, client):
        await client.handshake()
        await read_hello(client)
        flood(harness.hub, 10)
        assert harness.hub.stats.slow_consumers == 1
        await trio.sleep(CLOSE_TIMEOUT / 2)
        texts = 0
        close: Close | None = None
        while True:
            frame = await client.next_frame()
            if frame is None:
                break
            if frame.opcode is Opcode.TEXT:
                assert orjson.loads(frame.data)["type"] == "swp.ai.status"
                texts += 1
            elif frame.opcode is Opcode.CLOSE:
                close = Close.parse(frame.data)
        assert close is not None
        assert (close.code, close.reason) == (4003, "slow_consumer")
        assert texts < 10  # the backlog was dropped, not delivered
        await harness.wait_done()


# --------------------------------------------------------------------------- replay


async def test_replay_is_paced_by_the_client_with_no_gap_or_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A replay far larger than the queue cap, live events arriving meanwhile
    (some committed before they are published), a client that reads slowly:
    every position once, in order, and no slow_consumer."""
    async with serving(pair=trio.testing.lockstep_stream_pair, position=1200) as (
        harness,
        client,
    ):
        harness.services.store = [make_event(p, size=1000) for p in range(1, 1201)]
        final = 1230

        attached = trio.Event()
        harness.hub.on_connections = lambda sub, delta: attached.set()

        async def live() -> None:
            await attached.wait()
            for position in range(1201, final + 1):
                event = make_event(position, size=1000)
                harness.services.store.append(event)  # committed...
                await trio.sleep(0.02)
                harness.hub.publish_events([event])  # ...then published
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(live)
            await client.handshake("token=good&since=100")
            hello = await read_hello(client)
            assert hello["stream_position"] == 1200
            positions: list[int] = []
            while not positions or positions[-1] < final:
                frame = await client.next_json()
                assert frame["type"] == "swp.room.message", frame
                positions.append(frame["stream_position"])
                await trio.sleep(0.001)  # a slow (but reading) client
        assert positions == list(range(101, final + 1))
        assert harness.hub.stats.slow_consumers == 0
        assert harness.services.replay_calls >= 3  # several pages
        # Live after the replay: delivered once, in order.
        harness.hub.publish_events([make_event(final + 1)])
        assert (await client.next_json())["stream_position"] == final + 1


async def test_bad_since_is_reported_after_hello(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (harness, client):
        await client.handshake("token=good&since=-3")
        await read_hello(client)
        error = await client.next_json()
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_INVALID_PARAM"
        harness.hub.publish_events([make_event(1)])
        assert (await client.next_json())["stream_position"] == 1


@pytest.mark.parametrize("since", ["%C2%B2", "%E2%91%A0", "1%C2%B3"])
async def test_unicode_digit_since_is_an_error_frame_not_a_dropped_socket(
    autojump_clock: trio.testing.MockClock, since: str
) -> None:
    """``since=²`` (percent-encoded on the wire) used to pass ``isdigit`` and crash ``int``."""
    async with serving() as (harness, client):
        await client.handshake(f"token=good&since={since}")
        await read_hello(client)
        error = await client.next_json()
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_INVALID_PARAM"
        assert error["error"]["message"].startswith("since")
        harness.hub.publish_events([make_event(1)])
        assert (await client.next_json())["stream_position"] == 1


# --------------------------------------------------------------------------- credentials


async def test_stream_closes_4001_when_its_access_token_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = FakeServices()
    services.expires_in = 3600.0
    # no keepalive pings in the way: the client does not read while it sleeps
    async with serving(settings(ping_interval=1e6), services=services) as (harness, client):
        await client.handshake()
        await read_hello(client)
        await trio.sleep(3599.0)
        harness.hub.publish_events([make_event(1)])
        assert (await client.next_json())["stream_position"] == 1
        opened = trio.current_time()
        close = await client.wait_close()
        assert (close.code, close.reason) == (4001, "SW_AUTH_EXPIRED_TOKEN")
        # closed at the expiry (virtual time), not at some later sweep
        assert trio.current_time() - opened <= 1.0 + 1e-6
        await harness.wait_done()
        # nothing is delivered to it afterwards
        assert harness.hub.connection_count() == 0


async def test_stream_whose_credential_is_already_expired_closes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = FakeServices()
    services.expires_in = 0.0
    async with serving(services=services) as (_harness, client):
        await client.handshake()
        await read_hello(client)
        close = await client.wait_close()
        assert close.code == 4001


async def test_revoked_between_authenticate_and_attach_closes_before_hello(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = FakeServices()
    services.revoked = True  # authenticate passed; the re-check after registering fails
    async with serving(services=services) as (harness, client):
        await client.handshake()
        close = await client.wait_close()
        assert (close.code, close.reason) == (4001, "SW_AUTH_INVALID_TOKEN")
        assert harness.hub.connection_count() == 0


@pytest.mark.parametrize(
    ("kind", "value"),
    [("credential", "key-good"), ("family", "fam-1"), ("participant", ALICE)],
)
async def test_registry_revoke_closes_4001_and_stops_delivery_and_frames(
    autojump_clock: trio.testing.MockClock, kind: str, value: str
) -> None:
    services = FakeServices()

    async def authenticate(token: str | None) -> Principal:
        return Principal(ALICE, "key-good", "access", family_id="fam-1")

    services.authenticate = authenticate  # type: ignore[method-assign]
    async with serving(services=services) as (harness, client):
        await client.handshake()
        await read_hello(client)
        assert harness.registry.revoke(kind, "something-else") == 0
        assert harness.registry.revoke(kind, value) == 1
        # typed after the revocation: never acted on
        await client.send_text('{"type": "typing", "room_id": "room-1", "typing": true}')
        harness.hub.publish_events([make_event(1)])
        close = await client.wait_close()
        assert (close.code, close.reason) == (4001, "SW_AUTH_INVALID_TOKEN")
        await harness.wait_done()
        assert services.typed == []
        assert harness.registry.revoked_closes == 1
        assert len(harness.registry) == 0


async def test_frame_refused_for_a_revoked_credential_closes_4001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = FakeServices()
    async with serving(services=services) as (_harness, client):
        await client.handshake()
        await read_hello(client)
        services.revoked = True  # committed; the registry has not been told yet
        await client.send_text('{"type": "typing", "room_id": "room-1", "typing": true}')
        error = await client.next_json()
        assert error["type"] == "error"
        assert error["error"]["code"] == "SW_AUTH_INVALID_TOKEN"
        close = await client.wait_close()
        assert close.code == 4001
        assert services.typed == []


# --------------------------------------------------------------------------- long-poll


class StubReaders:
    """Readers whose every read returns ``events`` (what the database holds)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reads = 0

    async def read(self, fn: Callable[..., Any], *args: Any) -> list[Event]:
        self.reads += 1
        await trio.lowlevel.checkpoint()
        return list(self.events)


def message_service(hub: Hub, readers: StubReaders) -> MessageService:
    limits = MessageLimits(
        max_content_bytes=65536,
        idempotency_window_ms=60_000,
        rate_limit_window=60.0,
        rate_limit_for=lambda pid: 0,
    )
    return MessageService(cast("Writer", None), cast("Readers", readers), hub, lambda: 0, limits)


def poll_hub() -> Hub:
    hub = Hub("tenant", encode_text_frame)
    hub.load_memberships([(ROOM, ALICE), ("room-other", "p-bob")], 0)
    return hub


async def test_sync_returns_empty_exactly_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, readers = poll_hub(), StubReaders()
    service = message_service(hub, readers)
    start = trio.current_time()
    with trio.fail_after(60):
        page = await service.sync(ALICE, since=0, limit=100, timeout_ms=30_000)
    assert trio.current_time() - start == pytest.approx(30.0)
    assert (page.events, page.has_more, page.next_cursor) == ([], False, "0")


async def test_sync_timeout_zero_does_not_wait(autojump_clock: trio.testing.MockClock) -> None:
    hub, readers = poll_hub(), StubReaders()
    service = message_service(hub, readers)
    start = trio.current_time()
    with trio.fail_after(1):
        page = await service.sync(ALICE, since=7, limit=100, timeout_ms=0)
    assert trio.current_time() == start
    assert (page.events, page.next_cursor) == ([], "7")
    assert readers.reads == 1


async def test_sync_returns_as_soon_as_an_event_is_published(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, readers = poll_hub(), StubReaders()
    service = message_service(hub, readers)
    start = trio.current_time()
    event = make_event(1)

    async def commit_later() -> None:
        await trio.sleep(7)
        readers.events = [event]
        hub.publish_events([event])

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit_later)
            page = await service.sync(ALICE, since=0, limit=100, timeout_ms=30_000)
    assert trio.current_time() - start == pytest.approx(7.0)
    assert page.events == [event]
    assert page.next_cursor == "1"


async def test_sync_ignores_events_it_cannot_see(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Publishes elsewhere, or wakes that find nothing visible, keep it waiting."""
    hub, readers = poll_hub(), StubReaders()
    service = message_service(hub, readers)
    start = trio.current_time()

    async def noise() -> None:
        await trio.sleep(5)
        hub.publish_events([make_event(1, room_id="room-other")])  # not alice's room
        await trio.sleep(5)
        hub.publish_events([make_event(2)])  # alice's room, but the read finds nothing

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(noise)
            page = await service.sync(ALICE, since=0, limit=100, timeout_ms=20_000)
    assert trio.current_time() - start == pytest.approx(20.0)
    assert page.events == []
    assert readers.reads == 3  # first read, after the wake at 10 s, at the deadline


async def test_sync_has_more_and_cursor(autojump_clock: trio.testing.MockClock) -> None:
    hub, readers = poll_hub(), StubReaders()
    readers.events = [make_event(p) for p in range(1, 4)]
    service = message_service(hub, readers)
    with trio.fail_after(1):
        page = await service.sync(ALICE, since=0, limit=2, timeout_ms=30_000)
    assert [e.stream_position for e in page.events] == [1, 2]
    assert page.has_more is True
    assert page.next_cursor == "2"


# --------------------------------------------------------------------------- robustness


async def test_unexpected_send_failure_is_an_error_frame(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as (harness, client):
        await client.handshake()
        await read_hello(client)
        await client.send_text(
            '{"type": "send", "req_id": "r-1", "room_id": "room-explode", "content": {}}'
        )
        error = await client.next_json()
        assert error["type"] == "error"
        assert error["req_id"] == "r-1"
        assert error["error"]["code"] == "SW_INTERNAL"
        assert "unexpected failure" not in str(error)
        await client.send_text('{"type": "ping"}')
        assert (await client.next_json())["type"] == "pong"
        assert not harness.done.is_set()
    assert "stream send failed" in caplog.text


async def test_unexpected_failure_never_escapes_serve_stream(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as (harness, client):
        await client.handshake("token=explode")
        await harness.wait_done()  # serve_stream returned instead of raising
        assert await client.next_frame() is None
    assert "stream connection failed" in caplog.text


async def test_frames_sent_with_the_handshake_are_not_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that pipelines a frame right behind its upgrade request."""
    async with serving() as (harness, client):
        proto = ClientProtocol(parse_uri("ws://test.local/v1/stream?token=good"))
        proto.send_request(proto.connect())
        ping = Frame(Opcode.TEXT, b'{"type": "ping"}').serialize(mask=True, extensions=[])
        await client.stream.send_all(b"".join(proto.data_to_send()) + ping)
        client.proto = proto
        while proto.state is State.CONNECTING:
            await client._feed()
        with trio.fail_after(1):  # virtual: the pong comes without more client bytes
            await read_hello(client)
            assert (await client.next_json())["type"] == "pong"
        assert not harness.done.is_set()


async def test_pings_during_the_close_cannot_grow_the_outbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that stops reading, is closed, then floods pings: the pongs it
    would be owed are bounded by the queue cap, not by what it sends."""
    async with serving(pair=trio.testing.lockstep_stream_pair, answer=False) as (_, client):
        await client.handshake()
        await read_hello(client)
        await trio.sleep(2 * INTERVAL + 1)  # ping_timeout: close frame queued
        for _ in range(20_000):
            client.p.send_ping(b"x" * 100)
        flood = b"".join(client.p.data_to_send())
        assert len(flood) > 2_000_000
        await client.stream.send_all(flood)
        received = 0
        while data := await client.stream.receive_some(65536):
            received += len(data)
        assert received < 2 * 65536
