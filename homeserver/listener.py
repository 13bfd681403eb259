"""One port for REST and the stream: a connection-level router.

Each accepted connection's request head (request line and headers) is read,
bounded in size (:data:`MAX_HEAD`) and in time (:data:`HEAD_TIMEOUT` for the
whole head, however slowly it dribbles in: no slowloris). ``GET /v1/stream``
goes to our WebSocket driver (homeserver.stream), which writes pre-encoded
frames straight to the socket; a head the fast path wants (streamed session
replies and ScaiBot chats, homeserver.http.direct) goes to it, and the connection
comes back here for its next request when that response is complete (hypercorn
hands an idle connection back too when its next request is one of those);
everything else goes to hypercorn's
per-connection HTTP server running the Quart shim (homeserver.http.server
bounds the heads of later keep-alive requests the same way). The bytes
already read are replayed to whichever side takes the connection.

Every connection the router refuses is counted in :class:`ListenerStats` (a
plain counter object metrics can read) and logged.

Why not let hypercorn serve the WebSocket too: measured on this machine kind,
quart-trio/hypercorn WebSockets top out at 7-13 k deliveries/s and always
negotiate per-connection compression; the write-through driver reaches
170 k+ (reference/stack-measurements.md).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson
import trio

from homeserver.errors import error_body
from protocol.errors import ApiError, ErrorCode

log = logging.getLogger("homeserver.listener")

MAX_HEAD = 16384  # request line and headers; hypercorn's h11_max_incomplete_size matches
HEAD_TIMEOUT = 10.0  # for the whole head, from accept
KEEP_ALIVE_TIMEOUT = 75.0  # an idle connection waits this long for its next request
MAX_REQUEST_LINE = 8192  # the first line alone (answered 400 in the envelope beyond it)
REFUSE_TIMEOUT = 1.0  # time to hand a refusal (408/431) to the kernel
DRAIN_BYTES = 1 << 20  # read (and drop) at most this much of a refused request...
DRAIN_TIMEOUT = 2.0  # ...for at most this long, so the client reads the answer, not a reset

StreamHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a fast-path handler left a connection.

    ``handoff``: not its request after all: the HTTP server takes the connection, with
    ``data`` (every byte read so far) replayed first. ``next``: the response is complete
    and the connection carries on; ``data`` is what was read past the request.
    ``close``: done with the connection.
    """

    kind: Literal["handoff", "next", "close"]
    data: bytes = b""


class FastPath(Protocol):
    def wants(self, head: bytes) -> bool: ...

    async def serve(self, conn: trio.SocketStream, head: bytes) -> Outcome: ...


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes already taken from it."""

    def __init__(self, inner: trio.SocketStream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix
        self.socket = inner.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(slots=True)
class ListenerStats:
    """Connections closed by the router before any handler saw them."""

    head_timeouts: int = 0  # the head did not arrive within HEAD_TIMEOUT
    head_too_large: int = 0  # the head grew over MAX_HEAD
    line_too_long: int = 0  # the request line grew over MAX_REQUEST_LINE
    closed_before_head: int = 0  # the peer closed (or reset) before a full head

    def to_dict(self) -> dict[str, int]:
        return {
            "head_timeouts": self.head_timeouts,
            "head_too_large": self.head_too_large,
            "line_too_long": self.line_too_long,
            "closed_before_head": self.closed_before_head,
        }


HeadResult = Literal["timeout", "too_large", "line_too_long", "closed"]


async def read_head(
    stream: trio.abc.ReceiveStream, *, max_bytes: int = MAX_HEAD, initial: bytes = b""
) -> bytes | HeadResult:
    """Read until the end of the request head (a blank line).

    Returns everything read (``initial``, the head and whatever came right behind
    it), or why not: ``timeout`` (the whole head, not each read, is timed),
    ``line_too_long`` (no end of the request line within MAX_REQUEST_LINE),
    ``too_large`` or ``closed``.
    """
    buf = bytearray(initial)
    with trio.move_on_after(HEAD_TIMEOUT):
        scanned = 0
        while True:
            end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
            if end != -1:
                return bytes(buf) if end + 4 <= max_bytes else "too_large"
            if len(buf) > MAX_REQUEST_LINE + 2 and b"\r\n" not in buf[: MAX_REQUEST_LINE + 2]:
                return "line_too_long"
            if len(buf) > max_bytes:
                return "too_large"
            scanned = len(buf)
            try:
                data = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return "closed"
            if not data:
                return "closed"
            buf += data
    return "timeout"


def _envelope(status: bytes, exc: ApiError) -> bytes:
    """A whole HTTP/1.1 error response in the usual JSON envelope, ``Connection: close``."""
    body, _ = error_body(exc, "sw", "req_" + secrets.token_urlsafe(12))
    payload = orjson.dumps(body)
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(payload)).encode() + b"\r\nconnection: close\r\n\r\n"
    ) + payload


async def _refuse(conn: trio.SocketStream, status: bytes, exc: ApiError) -> None:
    """An error response, best effort, then the caller closes."""
    with trio.move_on_after(REFUSE_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await conn.send_all(_envelope(status, exc))


async def refuse_long_line(conn: trio.SocketStream) -> None:
    """A 400 envelope for a request line over the limit, then close.

    The rest of the request is read and dropped (bounded) before closing, so the
    kernel does not reset the connection under the client's reading (schemathesis
    found the reset with a 24 KB query string).
    """
    exc = ApiError(ErrorCode.SW_INVALID_PARAM, f"the request line is over {MAX_REQUEST_LINE} bytes")
    with trio.move_on_after(DRAIN_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await conn.send_all(_envelope(b"400 Bad Request", exc))
            await conn.send_eof()
            drained = 0
            while drained < DRAIN_BYTES:
                data = await conn.receive_some(65536)
                if not data:
                    break
                drained += len(data)


def is_stream_request(head: bytes) -> bool:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    target = parts[1]
    return target == b"/v1/stream" or target.startswith(b"/v1/stream?")


class Router:
    def __init__(
        self,
        http: Callable[[trio.abc.Stream], Awaitable[bytes | None]],
        stream: StreamHandler,
        fast: FastPath | None = None,
    ) -> None:
        self._http = http
        self._stream = stream
        self._fast = fast
        self.stats = ListenerStats()

    async def handle(self, conn: trio.SocketStream) -> None:
        try:
            head: bytes | HeadResult | None = await read_head(conn)
            while isinstance(head, bytes):
                head = await self._serve(conn, head)
            if head is not None:
                await self._refused(conn, head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # One connection's failure must never take the listener down.
            log.exception("connection handler failed")
        finally:
            await trio.aclose_forcefully(conn)

    async def _serve(self, conn: trio.SocketStream, head: bytes) -> bytes | HeadResult | None:
        """Serve the request starting at ``head``; the next head if the connection comes back
        (after a fast-path response, or handed back by the HTTP server), else None."""
        if is_stream_request(head):
            await self._stream(conn, head)
            return None
        data = head
        if self._fast is not None and self._fast.wants(head):
            outcome = await self._fast.serve(conn, head)
            if outcome.kind == "close":
                return None
            if outcome.kind == "next":
                return await _next_request(conn, outcome.data)
            data = outcome.data
        returned = await self._http(PrefixedStream(conn, data))
        if returned is None:
            return None
        return await read_head(conn, initial=returned)

    async def _refused(self, conn: trio.SocketStream, why: HeadResult) -> None:
        peer = _peer(conn)
        if why == "closed":
            self.stats.closed_before_head += 1
            log.debug("connection from %s closed before a full request head", peer)
        elif why == "line_too_long":
            self.stats.line_too_long += 1
            log.info(
                "refusing connection from %s: request line over %d bytes", peer, MAX_REQUEST_LINE
            )
            await refuse_long_line(conn)
        elif why == "timeout":
            self.stats.head_timeouts += 1
            log.info(
                "closing connection from %s: request head not complete after %.0f s (%d so far)",
                peer,
                HEAD_TIMEOUT,
                self.stats.head_timeouts,
            )
            await _refuse(
                conn,
                b"408 Request Timeout",
                ApiError(ErrorCode.SW_REQUEST_TIMEOUT, "the request head took too long"),
            )
        else:
            self.stats.head_too_large += 1
            log.info(
                "closing connection from %s: request head over %d bytes (%d so far)",
                peer,
                MAX_HEAD,
                self.stats.head_too_large,
            )
            await _refuse(
                conn,
                b"431 Request Header Fields Too Large",
                ApiError(
                    ErrorCode.SW_HEADERS_TOO_LARGE, f"the request head is over {MAX_HEAD} bytes"
                ),
            )


async def _next_request(conn: trio.SocketStream, data: bytes) -> bytes | HeadResult | None:
    """The next request head on a kept-alive connection; None when none comes."""
    if not data:
        with trio.move_on_after(KEEP_ALIVE_TIMEOUT):
            try:
                data = await conn.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
        if not data:
            return None
    return await read_head(conn, initial=data)


def _peer(conn: trio.SocketStream) -> str:
    try:
        return str(conn.socket.getpeername()[:2])
    except OSError:
        return "?"
