"""One ``/v1/stream`` WebSocket connection, on websockets' sans-I/O protocol.

Rules
-----
1. Handshake first; then authenticate. A bad or missing token closes the
   socket with 4001 ``SW_AUTH_INVALID_TOKEN``.
2. ``hello`` is the first server frame: it is queued before the connection
   attaches to the hub (attaching may send frames, e.g. presence), with no
   checkpoint between, so its position is where live delivery starts. A bad
   ``since`` is reported in an ``error`` frame right after it.
   With ``?since=`` the connection is
   attached to the hub *before* history is read, holding live events; the
   replay is sent, then the held events with a greater position. No gap
   (anything committed after attaching is held), no duplicate (positions at
   or below the last replayed one are skipped).
   The replay waits for the outbox to drain (it never overflows a client
   that reads); live events held meanwhile count against the byte cap.
3. Client frames: ``ping`` -> ``pong``; ``typing``; ``send`` -> ``ack`` or
   ``error``. A malformed or unknown frame gets an ``error`` frame and the
   socket stays open. Fragmented messages are reassembled (the protocol
   bounds their total size); frames that came in with the handshake request
   are handled, not dropped. A service failing unexpectedly answers
   ``SW_INTERNAL``; nothing escapes ``serve_stream`` but cancellation.
4. Keepalive: a protocol ping every ``ping_interval``; no pong by the next
   tick closes with 4003 ``ping_timeout``.
5. Overflowing the outbox closes with 4003 ``slow_consumer``; a second
   connection on the same access token closes the older one with 4003
   ``duplicate_connection``.
6. Credentials: the connection registers (homeserver.stream.registry), then
   re-checks its credential, so a revocation racing the handshake is never
   missed; a revocation closes it 4001 ``SW_AUTH_INVALID_TOKEN`` (the
   revocation watcher calls the registry), its credential's expiry 4001
   ``SW_AUTH_EXPIRED_TOKEN``. A ``send`` re-checks the credential in its own
   transaction and ``typing`` on a read, and a failed check closes 4001: no
   frame is acted on after the revocation commits.
7. Closing: once a close frame is sent or received, the write side is shut
   (EOF) after the queued bytes, and the connection ends when the peer closes
   its side or ``CLOSE_TIMEOUT`` after the close began, whichever is first,
   so a peer that stops reading never pins a connection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from homeserver.errors import error_frame
from homeserver.identity.auth import AUTH_FAILURES, Principal
from homeserver.live.hub import Hub
from homeserver.observe import logs
from homeserver.observe.stats import StreamStats
from homeserver.stream.outbox import Outbox
from homeserver.stream.registry import Registry
from protocol import frames as client_frames
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, wire_event
from protocol.validation import parse_position

log = logging.getLogger("homeserver.stream")

__all__ = ["Registry", "StreamConnection", "StreamServices", "StreamSettings", "serve_stream"]

CLOSE_AUTH = 4001
CLOSE_TRY_AGAIN = 1013
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

    async def check_credential(self, principal: Principal) -> None:
        """Raise ``ApiError`` (an auth code) unless the credential is still live."""

    def seconds_left(self, principal: Principal) -> float | None:
        """How long the credential still works (``None``: no expiry)."""

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
    max_connections: int = 0  # 0 = no limit
    log_lifecycle: bool = False  # one structured log line at open and at close


class StreamConnection:
    """Implements :class:`homeserver.live.hub.Subscriber` for one socket."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        proto: ServerProtocol,
        principal: Principal,
        hub: Hub,
        services: StreamServices,
        settings: StreamSettings,
        stats: StreamStats | None = None,
    ) -> None:
        self.participant_id = principal.participant_id
        self.principal = principal
        self.session_id = "ses-" + secrets.token_urlsafe(12)
        self._stream = stream
        self._proto = proto
        self._hub = hub
        self._services = services
        self._settings = settings
        self._stats = stats if stats is not None else StreamStats()
        self._outbox = Outbox(
            stream, cap_bytes=settings.queue_bytes, on_overflow=self._overflow, stats=self._stats
        )
        self._close_code: int | None = None
        self._close_reason = ""
        self._held: list[tuple[int, bytes]] | None = None
        self._held_bytes = 0
        self._last_position = 0
        self._awaiting_pong = False
        self._closing = False
        self._scope: trio.CancelScope | None = None
        self._close_by: float | None = None
        self._fragments: list[bytes] | None = None
        self._fragments_opcode = Opcode.TEXT
        self._send_slots = trio.Semaphore(MAX_SENDS_IN_FLIGHT)
        self._peer_done = trio.Event()

    # -- Subscriber ---------------------------------------------------------

    def deliver_events(self, items: list[tuple[int, bytes]]) -> None:
        if self._closing:
            return
        if self._held is not None:
            self._held.extend(items)
            self._held_bytes += sum(len(frame) for _, frame in items)
            if self._held_bytes > self._settings.queue_bytes:
                self._held = []
                self._overflow()
            return
        last = self._last_position
        if items[0][0] > last:
            frames = [frame for _, frame in items]
        else:
            frames = [frame for position, frame in items if position > last]
            if not frames:
                return
        self._last_position = items[-1][0]
        self._stats.frames_sent += len(frames)
        # One write for the whole commit batch.
        self._outbox.send_nowait(frames[0] if len(frames) == 1 else b"".join(frames))

    def deliver_ephemeral(self, frame: bytes) -> None:
        if self._closing:
            return
        self._stats.frames_sent += 1
        self._outbox.send_nowait(frame)

    # -- sending ------------------------------------------------------------

    def is_closing(self) -> bool:
        """True once a close began (ours or the peer's); nothing more is sent."""
        return self._closing

    def send_json(self, payload: dict[str, Any]) -> None:
        if not self._closing:
            self._stats.frames_sent += 1
            self._outbox.send_nowait(encode_text_frame(orjson.dumps(payload)))

    def _flush_protocol(self) -> None:
        for chunk in self._proto.data_to_send():
            if not chunk:
                # The protocol ends the TCP stream: after the closing
                # handshake, or when it failed the connection.
                self._begin_closing()
                self._outbox.send_eof_nowait()
            elif self._closing:
                # After an overflow the outbox takes nothing more; what the
                # protocol still writes (pongs, the close echo) is small, but
                # a peer pinging in a loop must not grow it without bound.
                if self._outbox.queued_bytes <= self._settings.queue_bytes:
                    self._outbox.force_queue(chunk)
            else:
                self._outbox.send_nowait(chunk)

    def _begin_closing(self) -> None:
        """No more frames from us; the connection ends within ``CLOSE_TIMEOUT``."""
        if not self._closing:
            self._closing = True
            self._hub.detach(self)
        if self._close_by is None:
            self._close_by = trio.current_time() + CLOSE_TIMEOUT
            if self._scope is not None:
                self._scope.deadline = min(self._scope.deadline, self._close_by)

    def close(self, code: int, reason: str) -> None:
        """Start a closing handshake; the connection ends shortly after."""
        if self._closing:
            return
        self._close_code, self._close_reason = code, reason
        self._begin_closing()
        if self._proto.state is State.OPEN:
            self._proto.send_close(code, reason)
        for chunk in self._proto.data_to_send():
            if chunk:
                self._outbox.force_queue(chunk)  # the close frame always goes
        self._outbox.send_eof_nowait()

    def close_unauthorised(self, reason: str, why: str) -> None:
        """Close 4001: the credential was revoked or expired. Nothing more is
        delivered or acted on (``_closing`` is set before this returns)."""
        if self._closing:
            return
        log.info("closing %s (%s): %s", self.session_id, self.participant_id, why)
        self.close(CLOSE_AUTH, reason)

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

    async def run(
        self,
        since: int | None,
        since_error: str | None = None,
        early_frames: Sequence[Frame] = (),
        expires_in: float | None = None,
    ) -> None:
        """Serve the connection until it ends.

        ``since_error`` is reported after hello; ``early_frames`` came in with
        the handshake request and are handled before anything read later.
        ``expires_in``: seconds until the credential expires; the connection
        closes (4001) then.
        """
        started = time.monotonic()
        self._stats.opened += 1
        if self._settings.log_lifecycle:
            logs.access(
                "stream open",
                kind="stream",
                phase="open",
                session_id=self.session_id,
                participant_id=self.participant_id,
                since=since,
            )
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._close_by is not None:
                    # Closed (duplicate_connection) before it started.
                    nursery.cancel_scope.deadline = self._close_by
                nursery.start_soon(self._writer_then_stop, nursery.cancel_scope)
                nursery.start_soon(self._keepalive)
                if expires_in is not None:
                    nursery.start_soon(self._expire_after, expires_in)
                try:
                    await self._start(since, since_error)
                    await self._read_loop(nursery, early_frames)
                finally:
                    self._peer_done.set()
                    # Give the writer a moment to flush a close frame, then stop.
                    self._begin_closing()
                    self._outbox.send_eof_nowait()
        finally:
            self._hub.detach(self)
            self._outbox.close_raw()
            self._closed(started)

    def close_cause(self) -> tuple[int | None, str]:
        """(close code, reason) of a connection that ended: ours if we closed it,
        else the peer's, else ``(None, "eof")`` for a connection that just went away."""
        if self._close_code is not None:
            return self._close_code, self._close_reason
        if self._proto.close_rcvd is not None:
            return self._proto.close_rcvd.code, self._proto.close_rcvd.reason or "peer"
        return None, "broken" if self._outbox.broken else "eof"

    def _closed(self, started: float) -> None:
        code, reason = self.close_cause()
        self._stats.closed_with(reason if self._close_code is not None else "peer_or_eof")
        if self._settings.log_lifecycle:
            logs.access(
                "stream close",
                kind="stream",
                phase="close",
                session_id=self.session_id,
                participant_id=self.participant_id,
                close_code=code,
                reason=reason,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )

    async def _expire_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.close_unauthorised("SW_AUTH_EXPIRED_TOKEN", "credential expired")

    async def _writer_then_stop(self, scope: trio.CancelScope) -> None:
        await self._outbox.run_writer()
        if self._closing or self._outbox.broken:
            # Wait briefly for the peer's close frame, then end everything.
            with trio.move_on_after(CLOSE_TIMEOUT if not self._outbox.broken else 0):
                await self._peer_done.wait()
            scope.cancel()

    async def _start(self, since: int | None, since_error: str | None) -> None:
        # hello, then attach, with no checkpoint between: hello is the first
        # frame (attaching may itself send frames, e.g. presence) and its
        # position is exactly where live delivery starts.
        self.send_json(
            {
                "type": "hello",
                "session_id": self.session_id,
                "server_name": self._services.server_name,
                "tenant_id": self.principal.tenant_id,
                "participant_id": self.participant_id,
                "stream_position": self._hub.position,
                "ts": self._services.now_iso(),
            }
        )
        if since_error is not None:
            self._error(None, ApiError(ErrorCode.SW_INVALID_PARAM, since_error))
        if since is not None:
            self._held = []
        self._last_position = self._hub.position
        self._hub.attach(self)
        if since is None:
            return
        self._last_position = since
        # Replay at the client's pace: keep the outbox under half its cap.
        high = self._settings.queue_bytes // 2
        while not self._closing:
            page = await self._services.replay(
                self.participant_id, self._last_position, REPLAY_PAGE
            )
            for event in page:
                if self._outbox.queued_bytes > high:
                    await self._outbox.wait_below(high // 2)
                if self.is_closing():
                    return
                self._last_position = event.stream_position
                self._outbox.send_nowait(
                    encode_text_frame(orjson.dumps(wire_event(event, self._services.tenant_id)))
                )
            if len(page) < REPLAY_PAGE:
                break
        if self.is_closing():
            return
        held, self._held = self._held or [], None
        if held:
            self.deliver_events(held)

    async def _read_loop(self, nursery: trio.Nursery, early_frames: Sequence[Frame]) -> None:
        for frame in early_frames:
            await self._on_frame(frame, nursery)
        self._flush_protocol()
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
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            self._awaiting_pong = False
            return
        if opcode is Opcode.CLOSE:
            self._begin_closing()
            return
        if opcode is Opcode.PING:
            return  # the protocol has queued the pong
        # A data message: one frame, or TEXT/BINARY (fin=False) + CONT... (fin=True).
        if opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol rejects this; nothing to deliver
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data, self._fragments = b"".join(self._fragments), None
            opcode = self._fragments_opcode
        elif not frame.fin:
            self._fragments = [bytes(frame.data)]
            self._fragments_opcode = opcode
            return
        else:
            data = bytes(frame.data)
        if self._closing:
            return
        if opcode is Opcode.TEXT:
            await self._on_text(data, nursery)
        else:
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
            self._refused(frame.req_id, exc)
        except Exception:
            log.exception("stream send failed (%s)", self.session_id)
            self._error(frame.req_id, ApiError(ErrorCode.SW_INTERNAL, "internal error"))
        else:
            self._ack(frame.req_id, event)
        finally:
            self._send_slots.release()

    def _ack(self, req_id: str | None, event: Event) -> None:
        if self._closing:
            return
        # The hub has just encoded this event for the room: reuse its bytes.
        payload = self._hub.encoded(event.event_id)
        if payload is None:
            payload = orjson.dumps(wire_event(event, self._services.tenant_id))
        body = b'{"type":"ack","req_id":' + orjson.dumps(req_id) + b',"event":' + payload + b"}"
        stats = self._stats
        stats.acked_sends += 1
        stats.frames_sent += 1
        self._outbox.send_nowait(encode_text_frame(body))

    async def _call(
        self, req_id: str | None, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        try:
            await fn(*args)
        except ApiError as exc:
            self._refused(req_id, exc)
        except Exception as exc:
            # error_frame logs the traceback and answers SW_INTERNAL.
            self._error(req_id, exc)

    def _refused(self, req_id: str | None, exc: ApiError) -> None:
        """An error frame; and a credential found revoked or expired closes 4001."""
        self._error(req_id, exc)
        if exc.code in AUTH_FAILURES:
            self.close_unauthorised(exc.code.name, exc.message)

    def _error(self, req_id: str | None, exc: BaseException) -> None:
        self.send_json(error_frame(exc, req_id))

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self._settings.ping_interval)
            if self._closing or self._proto.state is not State.OPEN:
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
    try:
        since = parse_position(_first(query, "since"), "since")
    except ApiError:
        return token, None, "since: must be a non-negative integer stream position"
    return token, since, None


async def _handshake(
    stream: trio.abc.HalfCloseableStream, prefix: bytes, max_frame_bytes: int
) -> tuple[ServerProtocol, Request, list[Frame]] | None:
    """Read the upgrade request and answer it.

    Returns the protocol, the request and any frames the client sent right
    behind its request (they are parsed in the same pass as the request).
    """
    proto = ServerProtocol(max_size=max_frame_bytes)
    proto.receive_data(prefix)
    request: Request | None = None
    early: list[Frame] = []
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while request is None:
            for event in proto.events_received():
                if isinstance(event, Request):
                    request = event
                elif isinstance(event, Frame):
                    early.append(event)
            if request is not None or proto.state is State.CLOSED or proto.eof_sent:
                # eof_sent: the request was not valid HTTP; the protocol gives up.
                break
            data = await stream.receive_some(65536)
            if not data:
                return None
            proto.receive_data(data)
    if request is None:
        # Timed out, or refused (an error response may be pending: send it).
        pending = b"".join(proto.data_to_send())
        if pending:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await stream.send_all(pending)
        return None
    # Whatever parsing those early frames produced (a pong) cannot go before
    # the response; a client must not send them that early anyway (RFC 6455).
    proto.data_to_send()
    response = proto.accept(request)
    proto.send_response(response)
    await stream.send_all(b"".join(c for c in proto.data_to_send() if c))
    if response.status_code != 101:
        return None
    return proto, request, early


async def serve_stream(
    stream: trio.abc.HalfCloseableStream,
    prefix: bytes,
    *,
    hub: Hub,
    registry: Registry,
    services: StreamServices,
    settings: StreamSettings,
    stats: StreamStats | None = None,
) -> None:
    """Serve one connection whose first bytes (already read) are ``prefix``.

    Never raises (but for cancellation): one failing connection must not take
    the listener, and with it every other connection, down.
    """
    try:
        await _serve_stream(
            stream,
            prefix,
            hub=hub,
            registry=registry,
            services=services,
            settings=settings,
            stats=stats if stats is not None else StreamStats(),
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("stream connection failed")


async def _serve_stream(
    stream: trio.abc.HalfCloseableStream,
    prefix: bytes,
    *,
    hub: Hub,
    registry: Registry,
    services: StreamServices,
    settings: StreamSettings,
    stats: StreamStats,
) -> None:
    shaken = await _handshake(stream, prefix, settings.max_frame_bytes)
    if shaken is None:
        return
    proto, request, early_frames = shaken
    if settings.max_connections and hub.connection_count() >= settings.max_connections:
        # 1013 "try again later": the client backs off and reconnects.
        await _close_now(stream, proto, CLOSE_TRY_AGAIN, "SW_UNAVAILABLE: too many connections")
        return
    token, since, since_error = _token_from(request)
    try:
        principal = await services.authenticate(token)
    except ApiError:
        await _close_now(stream, proto, CLOSE_AUTH, "SW_AUTH_INVALID_TOKEN")
        return
    conn = StreamConnection(stream, proto, principal, hub, services, settings, stats)
    registry.add(conn, close_duplicate=settings.close_duplicate)
    try:
        # Registered first, then checked again: a revocation that committed
        # after ``authenticate`` read is seen here, and one that commits later
        # finds this connection in the registry.
        try:
            await services.check_credential(principal)
        except ApiError:
            await _close_now(stream, proto, CLOSE_AUTH, "SW_AUTH_INVALID_TOKEN")
            return
        await conn.run(since, since_error, early_frames, services.seconds_left(principal))
    finally:
        registry.release(conn)


async def _close_now(
    stream: trio.abc.HalfCloseableStream, proto: ServerProtocol, code: int, reason: str
) -> None:
    proto.send_close(code, reason)
    with trio.move_on_after(CLOSE_TIMEOUT):
        try:
            await stream.send_all(b"".join(c for c in proto.data_to_send() if c))
            # Wait for the client's close frame so it sees a clean close. The
            # protocol then asks to end the TCP stream (eof_sent): a client
            # waits for the server to do that, so stop reading there.
            while not proto.eof_sent:
                data = await stream.receive_some(65536)
                if not data:
                    break
                proto.receive_data(data)
            await stream.send_all(b"".join(c for c in proto.data_to_send() if c))
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await stream.aclose()
