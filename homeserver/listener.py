"""One port for REST and the stream: a connection-level router.

Each accepted connection's request line is read (bounded in size and time).
``GET /v1/stream`` goes to our WebSocket driver (homeserver.stream), which
writes pre-encoded frames straight to the socket; everything else goes to
hypercorn's per-connection HTTP server running the Quart shim. The bytes
already read are replayed to whichever side takes the connection.

Why not let hypercorn serve the WebSocket too: measured on this machine kind,
quart-trio/hypercorn WebSockets top out at 7-13 k deliveries/s and always
negotiate per-connection compression; the write-through driver reaches
170 k+ (reference/stack-measurements.md).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from homeserver.errors import error_body
from protocol.errors import ApiError, ErrorCode

log = logging.getLogger("homeserver.listener")

MAX_REQUEST_LINE = 8192
FIRST_LINE_TIMEOUT = 10.0
DRAIN_BYTES = 1 << 20  # read (and drop) at most this much of a refused request
DRAIN_TIMEOUT = 2.0


class RequestLineTooLong(Exception):
    """The first line passed MAX_REQUEST_LINE bytes (answered 400, then closed)."""


StreamHandler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


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


async def read_request_line(stream: trio.SocketStream) -> bytes | None:
    """Read until the first CRLF; ``None`` if the peer is silent or slow.

    Raises :class:`RequestLineTooLong` past ``MAX_REQUEST_LINE`` bytes.
    """
    buf = b""
    with trio.move_on_after(FIRST_LINE_TIMEOUT):
        while b"\r\n" not in buf:
            if len(buf) > MAX_REQUEST_LINE:
                raise RequestLineTooLong
            try:
                data = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            buf += data
        return buf
    return None


def is_stream_request(head: bytes) -> bool:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    target = parts[1]
    return target == b"/v1/stream" or target.startswith(b"/v1/stream?")


class Router:
    def __init__(
        self, http: Callable[[trio.abc.Stream], Awaitable[Any]], stream: StreamHandler
    ) -> None:
        self._http = http
        self._stream = stream

    async def handle(self, conn: trio.SocketStream) -> None:
        try:
            try:
                head = await read_request_line(conn)
            except RequestLineTooLong:
                await refuse_long_line(conn)
                return
            if head is None:
                await conn.aclose()
                return
            if is_stream_request(head):
                await self._stream(conn, head)
            else:
                await self._http(PrefixedStream(conn, head))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # One connection's failure must never take the listener down.
            log.exception("connection handler failed")
        finally:
            await trio.aclose_forcefully(conn)


async def refuse_long_line(conn: trio.SocketStream) -> None:
    """A 400 envelope for a request line over the limit, then close.

    The rest of the request is read and dropped (bounded) before closing, so
    the kernel does not reset the connection under the client's reading.
    """
    exc = ApiError(ErrorCode.SW_INVALID_PARAM, f"the request line is over {MAX_REQUEST_LINE} bytes")
    body, status = error_body(exc, "sw", "req_" + secrets.token_urlsafe(12))
    payload = orjson.dumps(body)
    head = (
        f"HTTP/1.1 {status} Bad Request\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    with trio.move_on_after(DRAIN_TIMEOUT):
        await conn.send_all(head.encode() + payload)
        await conn.send_eof()
        drained = 0
        while drained < DRAIN_BYTES:
            data = await conn.receive_some(65536)
            if not data:
                break
            drained += len(data)
