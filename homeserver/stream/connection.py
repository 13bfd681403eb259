"""One ``/v1/stream`` WebSocket connection, on websockets' sans-I/O protocol.

Rules
-----
1. Handshake first; then authenticate. A bad or missing token closes the
   socket with 4001 ``SW_AUTH_INVALID_TOKEN``.
2. ``hello`` is the first server frame. With ``?since=`` the connection is
   attached to the hub *before* history is read, holding live events; the
   replay is sent, then the held events with a greater position. No gap
   (anything committed after attaching is held), no duplicate (positions at
   or below the last replayed one are skipped).
3. Client frames: ``ping`` -> ``pong``; ``typing``; ``send`` -> ``ack`` or
   ``error``. A malformed or unknown frame gets an ``error`` frame and the
   socket stays open.
4. Keepalive: a protocol ping every ``ping_interval``; no pong by the next
   tick closes with 4003 ``ping_timeout``.
5. Overflowing the outbox closes with 4003 ``slow_consumer``; a second
   connection on the same access token closes the older one with 4003
   ``duplicate_connection``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from homeserver.auth import Principal
from homeserver.hub import Hub
from homeserver.stream.outbox import Outbox
from protocol import frames as client_frames
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, wire_event

log = logging.getLogger("homeserver.stream")

CLOSE_AUTH = 4001
CLOSE_ABORT = 4003
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
MAX_SENDS_IN_FLIGHT = 16
REPLAY_PAGE = 500


def encode_text_frame(payload: bytes) -> bytes:
    """A server text frame: unmasked, uncompressed, identical for every client."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


class StreamServices(Protocol):
    """What a stream connection asks of the rest of the server."""

    tenant_id: str
    server_name: str

    async def authenticate(self, token: str | None) -> Principal: ...

    async def send_message(
        self,
        principal: Principal,
        room_id: str,
        content: dict[str, Any],
        event_uuid: str | None,
        as_participant_id: str | None,
    ) -> Event: ...

    async def set_typing(self, principal: Principal, room_id: str, typing: bool) -> None: ...

    async def replay(self, participant_id: str, since: int, limit: int) -> list[Event]: ...

    def now_iso(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StreamSettings:
    ping_interval: float
    queue_bytes: int
    max_frame_bytes: int
    close_duplicate: bool


class Registry:
    """Open connections by access-token hash, for ``duplicate_connection``."""

    def __init__(self) -> None:
        self._by_token: dict[str, StreamConnection] = {}

    def claim(self, token_key: str, conn: StreamConnection) -> StreamConnection | None:
        older = self._by_token.get(token_key)
        self._by_token[token_key] = conn
        return older

    def release(self, token_key: str, conn: StreamConnection) -> None:
        if self._by_token.get(token_key) is conn:
            del self._by_token[token_key]

    def __len__(self) -> int:
        return len(self._by_token)


class StreamConnection:
    """Implements :class:`homeserver.hub.Subscriber` for one socket."""

    def __init__(
        self,
        stream: trio.SocketStream,
        proto: ServerProtocol,
        principal: Principal,
        hub: Hub,
        services: StreamServices,
        settings: StreamSettings,
    ) -> None:
        self.participant_id = principal.participant_id
        self.principal = principal
        self.session_id = "ses-" + secrets.token_urlsafe(12)
        self._stream = stream
        self._proto = proto
        self._hub = hub
        self._services = services
        self._settings = settings
        self._outbox = Outbox(stream, cap_bytes=settings.queue_bytes, on_overflow=self._overflow)
        self._held: list[tuple[int, bytes]] | None = None
        self._held_bytes = 0
        self._last_position = 0
        self._awaiting_pong = False
        self._closing = False
        self._cancel = trio.CancelScope()
        self._send_slots = trio.Semaphore(MAX_SENDS_IN_FLIGHT)
        self._peer_done = trio.Event()

    # -- Subscriber ---------------------------------------------------------

    def deliver_event(self, position: int, frame: bytes) -> None:
        if self._closing:
            return
        if self._held is not None:
            self._held.append((position, frame))
            self._held_bytes += len(frame)
            if self._held_bytes > self._settings.queue_bytes:
                self._held = []
                self._overflow()
            return
        if position <= self._last_position:
            return
        self._last_position = position
        self._outbox.send_nowait(frame)

    def deliver_ephemeral(self, frame: bytes) -> None:
        if self._closing:
            return
        self._outbox.send_nowait(frame)

    # -- sending ------------------------------------------------------------

    def send_json(self, payload: dict[str, Any]) -> None:
        if not self._closing:
            self._outbox.send_nowait(encode_text_frame(orjson.dumps(payload)))

    def _flush_protocol(self) -> None:
        for chunk in self._proto.data_to_send():
            if chunk:
                self._outbox.force_queue(chunk) if self._closing else self._outbox.send_nowait(
                    chunk
                )
            else:
                self._outbox.send_eof_nowait()

    def close(self, code: int, reason: str) -> None:
        """Start a closing handshake; the connection ends shortly after."""
        if self._closing:
            return
        self._closing = True
        if self._proto.state is State.OPEN:
            self._proto.send_close(code, reason)
        self._flush_protocol()
        self._outbox.send_eof_nowait()
        self._hub.detach(self)

    def _overflow(self) -> None:
        self._hub.stats.slow_consumers += 1
        log.warning(
            "closing slow consumer %s (%s): outbox over %d bytes",
            self.session_id,
            self.participant_id,
            self._settings.queue_bytes,
        )
        self.close(CLOSE_ABORT, "slow_consumer")

    # -- lifecycle ----------------------------------------------------------

    async def run(self, since: int | None) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer_then_stop, nursery.cancel_scope)
            nursery.start_soon(self._keepalive)
            try:
                await self._start(since)
                await self._read_loop(nursery)
            finally:
                self._peer_done.set()
                self._hub.detach(self)
                self._closing = True
                self._outbox.send_eof_nowait()
                # Give the writer a moment to flush a close frame, then stop.
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT

    async def _writer_then_stop(self, scope: trio.CancelScope) -> None:
        await self._outbox.run_writer()
        if self._closing or self._outbox.broken:
            # Wait briefly for the peer's close frame, then end everything.
            with trio.move_on_after(CLOSE_TIMEOUT if not self._outbox.broken else 0):
                await self._peer_done.wait()
            scope.cancel()

    async def _start(self, since: int | None) -> None:
        if since is not None:
            self._held = []
        self._hub.attach(self)
        self.send_json(
            {
                "type": "hello",
                "session_id": self.session_id,
                "server_name": self._services.server_name,
                "tenant_id": self._services.tenant_id,
                "participant_id": self.participant_id,
                "stream_position": self._hub.position,
                "ts": self._services.now_iso(),
            }
        )
        if since is None:
            self._last_position = self._hub.position
            return
        self._last_position = since
        while not self._closing:
            page = await self._services.replay(
                self.participant_id, self._last_position, REPLAY_PAGE
            )
            for event in page:
                self._last_position = event.stream_position
                self._outbox.send_nowait(
                    encode_text_frame(orjson.dumps(wire_event(event, self._services.tenant_id)))
                )
            if len(page) < REPLAY_PAGE:
                break
        held, self._held = self._held or [], None
        for position, frame in held:
            self.deliver_event(position, frame)

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                self._proto.receive_eof()
                self._flush_protocol()
                return
            self._proto.receive_data(data)
            for event in self._proto.events_received():
                if isinstance(event, Frame):
                    await self._on_frame(event, nursery)
            self._flush_protocol()
            if self._proto.state is State.CLOSED or self._outbox.broken:
                return

    async def _on_frame(self, frame: Frame, nursery: trio.Nursery) -> None:
        if frame.opcode is Opcode.PONG:
            self._awaiting_pong = False
        elif frame.opcode is Opcode.CLOSE:
            self._closing = True
        elif frame.opcode is Opcode.TEXT and not self._closing:
            await self._on_text(bytes(frame.data), nursery)
        elif frame.opcode is Opcode.BINARY:
            self._error(None, ApiError(ErrorCode.SW_UNKNOWN_FRAME, "binary frames are not used"))

    async def _on_text(self, data: bytes, nursery: trio.Nursery) -> None:
        try:
            parsed = client_frames.parse_client_frame(data)
        except ApiError as exc:
            self._error(client_frames.req_id_of(data), exc)
            return
        if isinstance(parsed, client_frames.Ping):
            self.send_json({"type": "pong", "ts": self._services.now_iso()})
        elif isinstance(parsed, client_frames.Typing):
            await self._call(
                None, self._services.set_typing, self.principal, parsed.room_id, parsed.typing
            )
        else:
            # Sends run concurrently (bounded): one slow commit does not stall reading.
            await self._send_slots.acquire()
            nursery.start_soon(self._send, parsed)

    async def _send(self, frame: client_frames.Send) -> None:
        try:
            event = await self._services.send_message(
                self.principal,
                frame.room_id,
                frame.content,
                frame.event_uuid,
                frame.as_participant_id,
            )
        except ApiError as exc:
            self._error(frame.req_id, exc)
        else:
            self.send_json(
                {
                    "type": "ack",
                    "req_id": frame.req_id,
                    "event": wire_event(event, self._services.tenant_id),
                }
            )
        finally:
            self._send_slots.release()

    async def _call(
        self, req_id: str | None, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        try:
            await fn(*args)
        except ApiError as exc:
            self._error(req_id, exc)

    def _error(self, req_id: str | None, exc: ApiError) -> None:
        body: dict[str, Any] = {"type": "error", "error": exc.to_dict()}
        if req_id is not None:
            body["req_id"] = req_id
        self.send_json(body)

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self._settings.ping_interval)
            if self._closing:
                return
            if self._awaiting_pong:
                log.info("closing %s: ping_timeout", self.session_id)
                self.close(CLOSE_ABORT, "ping_timeout")
                return
            self._awaiting_pong = True
            self._proto.send_ping(secrets.token_bytes(4))
            self._flush_protocol()


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _token_from(request: Request) -> tuple[str | None, int | None, str | None]:
    """(token, since, error) from the handshake request."""
    query = parse_qs(urlsplit(request.path).query)
    token = _first(query, "token")
    header = request.headers.get("Authorization")
    if not token and header and header.lower().startswith("bearer "):
        token = header[7:].strip()
    since_raw = _first(query, "since")
    if since_raw is None or since_raw == "":
        return token, None, None
    if not since_raw.isdigit() or len(since_raw) > 18:
        return token, None, "since: must be a non-negative integer stream position"
    return token, int(since_raw), None


async def _handshake(
    stream: trio.SocketStream, prefix: bytes, max_frame_bytes: int
) -> tuple[ServerProtocol, Request] | None:
    proto = ServerProtocol(max_size=max_frame_bytes)
    proto.receive_data(prefix)
    request: Request | None = None
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while request is None:
            for event in proto.events_received():
                if isinstance(event, Request):
                    request = event
            if request is not None or proto.state is State.CLOSED:
                break
            data = await stream.receive_some(65536)
            if not data:
                return None
            proto.receive_data(data)
    if request is None:
        return None
    response = proto.accept(request)
    proto.send_response(response)
    await stream.send_all(b"".join(proto.data_to_send()))
    if response.status_code != 101:
        return None
    return proto, request


async def serve_stream(
    stream: trio.SocketStream,
    prefix: bytes,
    *,
    hub: Hub,
    registry: Registry,
    services: StreamServices,
    settings: StreamSettings,
) -> None:
    """Serve one connection whose first bytes (already read) are ``prefix``."""
    shaken = await _handshake(stream, prefix, settings.max_frame_bytes)
    if shaken is None:
        return
    proto, request = shaken
    token, since, since_error = _token_from(request)
    try:
        principal = await services.authenticate(token)
    except ApiError:
        await _close_now(stream, proto, CLOSE_AUTH, "SW_AUTH_INVALID_TOKEN")
        return
    conn = StreamConnection(stream, proto, principal, hub, services, settings)
    if since_error is not None:
        conn.send_json(
            {"type": "error", "error": {"code": "SW_INVALID_PARAM", "message": since_error}}
        )
        since = None
    token_key = principal.token_key
    if settings.close_duplicate:
        older = registry.claim(token_key, conn)
        if older is not None:
            older.close(CLOSE_ABORT, "duplicate_connection")
    try:
        await conn.run(since)
    finally:
        registry.release(token_key, conn)


async def _close_now(
    stream: trio.SocketStream, proto: ServerProtocol, code: int, reason: str
) -> None:
    proto.send_close(code, reason)
    with trio.move_on_after(CLOSE_TIMEOUT):
        await stream.send_all(b"".join(c for c in proto.data_to_send() if c))
        # Wait for the client's close frame so it sees a clean close.
        while proto.state is not State.CLOSED:
            data = await stream.receive_some(65536)
            if not data:
                break
            proto.receive_data(data)
    await stream.aclose()
