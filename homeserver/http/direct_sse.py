"""The listener's fast path for streamed session replies (CONTRACT 11), served on the socket.

``POST /v1/sessions/{id}/messages`` with ``"stream": true`` and ``GET
/v1/sessions/{id}/messages/{msg_id}/stream`` are recognised by their request head
(:meth:`DirectSessions.wants`) and served here instead of by hypercorn and Quart: the
request is parsed with h11, the same services are called (``AuthService.authenticate``,
``SessionService.send``/``attach``: the session logic stays in one place), and the SSE
body (:class:`homeserver.http.sse.ReplyBody`, the Quart route's too) is written by
:class:`homeserver.http.sse_socket.SocketWriter` straight to the socket.

Only what is plainly ours is taken. Anything else is handed to the HTTP server with
every byte read so far, so it answers exactly as before: a body that is not a JSON
object or has no ``"stream": true`` (non-streamed sends, malformed JSON), a body over
the limit or without a ``Content-Length`` (chunked uploads), ``Expect``, HTTP/1.0, a
head h11 refuses, a body that does not arrive within :data:`BODY_TIMEOUT`.

Once taken, every refusal (authentication, scope, validation, ``SESSION_BUSY``,
``SESSION_CLOSED``, not found) is the usual JSON envelope from
:func:`homeserver.errors.error_body` with ``X-Request-Id``, counted in the HTTP
metrics and access log like a Quart response. Keep-alive: after a complete response
the connection goes back to the router (homeserver.listener) for its next request,
unless the client said ``Connection: close``; a response cut short closes it. A
connection hypercorn holds comes back to the router the same way when it is idle and
its next request line is one of these (homeserver/http/server.py).
"""

from __future__ import annotations

import email.utils
import http
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import h11
import orjson
import trio

from homeserver.errors import error_body
from homeserver.http import observe
from homeserver.http.shim import new_request_id
from homeserver.http.sse import ReplyBody
from homeserver.http.sse_socket import SocketWriter
from homeserver.identity.auth import AuthService
from homeserver.listener import MAX_HEAD, Outcome
from homeserver.observe.metrics import Metrics
from homeserver.sessions import Generation, SessionService
from homeserver.stream.registry import Registry
from protocol.errors import ApiError
from protocol.sessions import parse_send
from protocol.validation import parse_json_body

log = logging.getLogger("homeserver.http.sse")

BODY_TIMEOUT = 10.0  # for the whole body after the head; else the HTTP server has it
SEND_ROUTE = "/v1/sessions/{session_id}/messages"
ATTACH_ROUTE = "/v1/sessions/{session_id}/messages/{msg_id}/stream"
_PREFIX = [b"", b"v1", b"sessions"]


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["send", "attach"]
    session_id: str
    message_id: str = ""

    @property
    def route(self) -> str:
        return SEND_ROUTE if self.kind == "send" else ATTACH_ROUTE

    @property
    def method(self) -> str:
        return "POST" if self.kind == "send" else "GET"


def match(head: bytes) -> Target | None:
    """The session SSE route a request head asks for, if it is one (by its request line)."""
    end = head.find(b"\r\n")
    if end < 0:
        return None
    parts = head[:end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    path = parts[1].split(b"?", 1)[0]
    if not path.isascii() or b"%" in path:
        return None  # percent-decoding is the HTTP server's business
    segs = path.split(b"/")
    if segs[:3] != _PREFIX or len(segs) < 5 or not segs[3] or segs[4] != b"messages":
        return None
    if parts[0] == b"POST" and len(segs) == 5:
        return Target("send", segs[3].decode())
    if parts[0] == b"GET" and len(segs) == 7 and segs[5] and segs[6] == b"stream":
        return Target("attach", segs[3].decode(), segs[5].decode())
    return None


@dataclass(slots=True)
class Request:
    target: Target
    headers: dict[bytes, bytes]  # lower-case names; the first of repeated headers
    body: bytes
    path: str
    keep_alive: bool
    leftover: bytes  # bytes after the request (a pipelined next one)
    raw: bytes  # every byte read (to hand the request over after all)


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    header = headers.get(b"authorization", b"").decode("latin-1")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _date() -> bytes:
    return email.utils.formatdate(usegmt=True).encode()


class DirectSessions:
    """The fast path the :class:`homeserver.listener.Router` offers session SSE heads to."""

    def __init__(
        self,
        auth: AuthService,
        sessions: SessionService,
        *,
        limit: int,
        metrics: Metrics | None = None,
        access_log: bool = False,
        registry: Registry | None = None,
    ) -> None:
        self._auth = auth
        self._sessions = sessions
        self._limit = limit
        self._metrics = metrics
        self._access_log = access_log
        self.registry = registry if registry is not None else Registry()  # for revocation
        self.served = 0  # responses written here (refusals included)
        self.handed_off = 0  # requests given to the HTTP server after all

    def wants(self, head: bytes) -> bool:
        return match(head) is not None

    async def serve(self, conn: trio.SocketStream, head: bytes) -> Outcome:
        target = match(head)
        if target is None:
            return self._handoff(head)
        req = await self._read(conn, head, target)
        if isinstance(req, bytes):
            return self._handoff(req)
        body: dict[str, Any] = {}
        if target.kind == "send":
            try:
                body = parse_json_body(req.body, max_bytes=self._limit, family="sg")
            except ApiError:
                return self._handoff(req.raw)
            if body.get("stream") is not True:
                return self._handoff(req.raw)
        self.served += 1
        started = time.perf_counter()
        rid = new_request_id()
        try:
            principal = await self._auth.authenticate(_bearer(req.headers))
            if target.kind == "send":
                gen = await self._sessions.send(principal, target.session_id, parse_send(body))
            else:
                gen = await self._sessions.attach(principal, target.session_id, target.message_id)
        except Exception as exc:
            return await self._refuse(conn, req, exc, rid, started)
        writer = SocketWriter(
            conn,
            ReplyBody(gen, "sg"),
            heartbeat=self._sessions.limits.heartbeat_seconds,
            principal=principal,
        )
        self._record(req, 200, rid, started)
        self.registry.add(writer, close_duplicate=False)
        try:
            complete = await writer.run(_sse_head(gen, rid, req.keep_alive))
        finally:
            self.registry.release(writer)
        if complete and req.keep_alive:
            return Outcome("next", req.leftover + bytes(writer.leftover))
        return Outcome("close")

    def _handoff(self, data: bytes) -> Outcome:
        self.handed_off += 1
        return Outcome("handoff", data)

    async def _read(self, conn: trio.SocketStream, head: bytes, target: Target) -> Request | bytes:
        """The whole request, or every byte read when the HTTP server should answer it."""
        raw = bytearray(head)
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        parser.receive_data(head)
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return bytes(raw)
        if not isinstance(event, h11.Request):
            return bytes(raw)
        headers: dict[bytes, bytes] = {}
        for name, value in event.headers:
            headers.setdefault(name, value)
        length = int(headers.get(b"content-length", b"0"))
        if (
            b"transfer-encoding" in headers
            or b"expect" in headers
            or length > self._limit
            or (target.kind == "attach" and length)
        ):
            return bytes(raw)
        body = bytearray()
        with trio.move_on_after(BODY_TIMEOUT):
            while True:
                try:
                    event = parser.next_event()
                except h11.RemoteProtocolError:
                    return bytes(raw)
                if event is h11.NEED_DATA:
                    try:
                        data = await conn.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return bytes(raw)
                    raw += data
                    parser.receive_data(data)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    keep_alive = b"close" not in headers.get(b"connection", b"").lower()
                    return Request(
                        target,
                        headers,
                        bytes(body),
                        event_path(head),
                        keep_alive,
                        parser.trailing_data[0],
                        bytes(raw),
                    )
                else:
                    return bytes(raw)
        return bytes(raw)

    async def _refuse(
        self, conn: trio.SocketStream, req: Request, exc: Exception, rid: str, started: float
    ) -> Outcome:
        body, status = error_body(exc, "sg", rid)
        payload = orjson.dumps(body)
        lines = [
            b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode()),
            b"content-type: application/json",
            b"content-length: %d" % len(payload),
            b"x-request-id: " + rid.encode(),
            b"date: " + _date(),
        ]
        retry = body["error"].get("retry_after")
        if retry is not None:
            lines.append(b"retry-after: " + str(retry).encode())
        if not req.keep_alive:
            lines.append(b"connection: close")
        self._record(req, status, rid, started)
        try:
            await conn.send_all(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return Outcome("close")
        return Outcome("next", req.leftover) if req.keep_alive else Outcome("close")

    def _record(self, req: Request, status: int, rid: str, started: float) -> None:
        """The HTTP metrics and access line, as homeserver.http.observe writes them."""
        seconds = time.perf_counter() - started
        method, route = req.target.method, req.target.route
        observe.record(
            self._metrics, self._access_log, method, route, status, rid, req.path, seconds
        )


def event_path(head: bytes) -> str:
    line = head[: head.find(b"\r\n")]
    return line.split(b" ")[1].split(b"?", 1)[0].decode("ascii", "replace")


def _sse_head(gen: Generation, rid: str, keep_alive: bool) -> bytes:
    lines = [
        b"HTTP/1.1 200 OK",
        b"cache-control: no-cache",
        b"x-accel-buffering: no",
        b"x-message-id: " + gen.message_id.encode(),
    ]
    if gen.user_message_id:
        lines.append(b"x-user-message-id: " + gen.user_message_id.encode())
    lines += [
        b"content-type: text/event-stream",
        b"x-request-id: " + rid.encode(),
        b"date: " + _date(),
        b"transfer-encoding: chunked",
    ]
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"
