"""The listener's fast path: a few streamed routes answered on the socket itself.

Streamed replies are most of what a busy server writes: a token per SSE event, hundreds
of streams open. Through hypercorn and Quart every event costs an ASGI message, a
response-body generator step, h11 framing and a handful of wrapper coroutines per stream
(bench/RESULTS.md: 122 µs of server CPU per session delta, 37 µs here). So the
:class:`homeserver.listener.Router` offers every request head to :class:`DirectServer`,
which serves the routes that registered with it (:class:`DirectRoute`): the streamed
session replies (homeserver/http/direct_sessions.py) and ScaiBot's ``POST /chat``
(homeserver/modules/scaibot/direct_chat.py). The request is parsed with h11 and the
route calls the same services as its Quart twin, so the feature logic stays in one place.

Only what is plainly a route's own is taken. Anything else is handed to the HTTP server
with every byte read so far, so it answers exactly as before: a request line that is not
``HTTP/1.1`` or has percent-escapes in its path, a body over the limit or without a
``Content-Length`` (chunked uploads), ``Expect``, a head h11 refuses, a body that does not
arrive within :data:`BODY_TIMEOUT`, and whatever the route's :meth:`DirectRoute.prepare`
declines (a body that is not JSON, a send that is not streamed...).

Once taken, every refusal is the usual JSON envelope from
:func:`homeserver.errors.error_body` with ``X-Request-Id`` (:meth:`Exchange.refuse`),
counted in the HTTP metrics and access log like a Quart response (:meth:`Exchange.record`).
Keep-alive: after a complete response the connection goes back to the router for its next
request, unless the client said ``Connection: close``; a response cut short closes it. A
connection hypercorn holds comes back to the router the same way when it is idle and its
next request line is one of these (homeserver/http/server.py).
"""

from __future__ import annotations

import email.utils
import http
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import h11
import orjson
import trio

from homeserver.errors import error_body
from homeserver.http import observe
from homeserver.http.shim import new_request_id
from homeserver.http.sse import SSE_HEADERS
from homeserver.listener import MAX_HEAD, Outcome
from homeserver.observe.metrics import Metrics
from protocol.errors import Family

__all__ = ["DirectRoute", "DirectServer", "Exchange", "Outcome", "Request", "Target"]

BODY_TIMEOUT = 10.0  # for the whole body after the head; else the HTTP server has it
_SSE_FIELDS = [f"{k.lower()}: {v}".encode() for k, v in SSE_HEADERS.items()]  # as Quart's


@dataclass(frozen=True, slots=True)
class Target:
    """What a route matched in a request line."""

    method: str  # as counted in the metrics
    route: str  # the route template (metrics and access log), as the OpenAPI path
    params: tuple[str, ...] = ()  # the path's parameters, in order
    query: bytes = b""  # the raw query string (no ``?``)
    body: bool = True  # False: a request with a body is not this route's


class DirectRoute(Protocol):
    """One route the fast path serves."""

    def match(self, method: bytes, segments: list[bytes], query: bytes) -> Target | None:
        """The target, if the request line asks for this route (``segments``: the path split
        on ``/``, so ``segments[0] == b""``)."""
        ...

    def prepare(self, request: Request) -> Any | None:
        """What :meth:`respond` needs from the request, or None to hand it to the HTTP
        server after all (it then answers it exactly as before). Must not wait."""
        ...

    async def respond(self, exchange: Exchange, prepared: Any) -> Outcome:
        """Answer the request: :meth:`Exchange.refuse` or a response written to the socket."""
        ...


@dataclass(slots=True)
class Request:
    target: Target
    headers: dict[bytes, bytes]  # lower-case names; the first of repeated headers
    body: bytes
    path: str
    keep_alive: bool
    leftover: bytes  # bytes after the request (a pipelined next one)
    raw: bytes  # every byte read (to hand the request over after all)

    @property
    def bearer(self) -> str | None:
        """The ``Authorization: Bearer`` token, as homeserver.http.shim.bearer reads it."""
        header = self.headers.get(b"authorization", b"").decode("latin-1")
        if header[:7].lower() == "bearer ":
            return header[7:].strip() or None
        return None


def split_line(head: bytes) -> tuple[bytes, list[bytes], bytes] | None:
    """(method, path segments, query) of an ``HTTP/1.1`` request line the fast path may take."""
    end = head.find(b"\r\n")
    if end < 0:
        return None
    parts = head[:end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    path, _, query = parts[1].partition(b"?")
    if not path.isascii() or b"%" in path:
        return None  # percent-decoding is the HTTP server's business
    return parts[0], path.split(b"/"), query


def http_date() -> bytes:
    return email.utils.formatdate(usegmt=True).encode()


def response_head(status: int, fields: Sequence[bytes], keep_alive: bool) -> bytes:
    """A response head: the status line, ``fields`` (``name: value``), ``date`` and, when
    the connection will not carry another request, ``connection: close``."""
    lines = [b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode()), *fields]
    lines.append(b"date: " + http_date())
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class DirectServer:
    """The fast path the :class:`homeserver.listener.Router` offers every request head to."""

    def __init__(
        self,
        routes: Sequence[DirectRoute],
        *,
        limit: int,
        metrics: Metrics | None = None,
        access_log: bool = False,
    ) -> None:
        self.routes = tuple(routes)
        self.limit = limit
        self._metrics = metrics
        self._access_log = access_log
        self.served = 0  # responses written here (refusals included)
        self.handed_off = 0  # requests given to the HTTP server after all

    def _match(self, head: bytes) -> tuple[DirectRoute, Target] | None:
        line = split_line(head)
        if line is None:
            return None
        for route in self.routes:
            target = route.match(*line)
            if target is not None:
                return route, target
        return None

    def wants(self, head: bytes) -> bool:
        return self._match(head) is not None

    async def serve(self, conn: trio.SocketStream, head: bytes) -> Outcome:
        found = self._match(head)
        if found is None:
            return self.handoff(head)
        route, target = found
        request = await self._read(conn, head, target)
        if isinstance(request, bytes):
            return self.handoff(request)
        prepared = route.prepare(request)
        if prepared is None:
            return self.handoff(request.raw)
        self.served += 1
        return await route.respond(Exchange(self, conn, request), prepared)

    def handoff(self, data: bytes) -> Outcome:
        self.handed_off += 1
        return Outcome("handoff", data)

    def record(self, request: Request, status: int, rid: str, started: float) -> None:
        """The HTTP metrics and access line, as homeserver.http.observe writes them."""
        seconds = time.perf_counter() - started
        target = request.target
        observe.record(
            self._metrics,
            self._access_log,
            target.method,
            target.route,
            status,
            rid,
            request.path,
            seconds,
        )

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
            or length > self.limit
            or (not target.body and length)
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


class Exchange:
    """One request taken by the fast path: its id, start time, and how to answer it."""

    __slots__ = ("_server", "conn", "request", "rid", "started")

    def __init__(self, server: DirectServer, conn: trio.SocketStream, request: Request) -> None:
        self._server = server
        self.conn = conn
        self.request = request
        self.rid = new_request_id()
        self.started = time.perf_counter()

    def record(self, status: int) -> None:
        self._server.record(self.request, status, self.rid, self.started)

    def next(self, leftover: bytes = b"") -> Outcome:
        """The outcome of a complete response: the connection's next request, or close."""
        if self.request.keep_alive:
            return Outcome("next", self.request.leftover + leftover)
        return Outcome("close")

    async def refuse(self, exc: Exception, family: Family) -> Outcome:
        """``exc`` as the JSON error envelope (as homeserver.http.shim renders it)."""
        body, status = error_body(exc, family, self.rid)
        payload = orjson.dumps(body)
        fields = [
            b"content-type: application/json",
            b"content-length: %d" % len(payload),
            b"x-request-id: " + self.rid.encode(),
        ]
        retry = body["error"].get("retry_after")
        if retry is not None:
            fields.append(b"retry-after: " + str(retry).encode())
        self.record(status)
        try:
            await self.conn.send_all(
                response_head(status, fields, self.request.keep_alive) + payload
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return Outcome("close")
        return self.next()

    def sse_head(self, fields: Sequence[bytes] = ()) -> bytes:
        """The head of a 200 chunked ``text/event-stream`` response (recorded as answered)."""
        self.record(200)
        return response_head(
            200,
            [
                *_SSE_FIELDS,
                *fields,
                b"content-type: text/event-stream",
                b"x-request-id: " + self.rid.encode(),
                b"transfer-encoding: chunked",
            ],
            self.request.keep_alive,
        )


def event_path(head: bytes) -> str:
    line = head[: head.find(b"\r\n")]
    return line.split(b" ")[1].split(b"?", 1)[0].decode("ascii", "replace")
