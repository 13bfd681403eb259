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
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("homeserver.listener")

MAX_REQUEST_LINE = 8192
FIRST_LINE_TIMEOUT = 10.0

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
    """Read until the first CRLF; ``None`` if the peer is silent, slow or too long."""
    buf = b""
    with trio.move_on_after(FIRST_LINE_TIMEOUT):
        while b"\r\n" not in buf:
            if len(buf) > MAX_REQUEST_LINE:
                return None
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
            head = await read_request_line(conn)
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
