"""One port for REST and the stream: a connection-level router.

Each accepted connection's request head (request line and headers) is read,
bounded in size (:data:`MAX_HEAD`) and in time (:data:`HEAD_TIMEOUT` for the
whole head, however slowly it dribbles in: no slowloris). ``GET /v1/stream``
goes to our WebSocket driver (homeserver.stream), which writes pre-encoded
frames straight to the socket; everything else goes to hypercorn's
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import trio

log = logging.getLogger("homeserver.listener")

MAX_HEAD = 16384  # request line and headers; hypercorn's h11_max_incomplete_size matches
HEAD_TIMEOUT = 10.0  # for the whole head, from accept
REFUSE_TIMEOUT = 1.0  # time to hand a refusal (408/431) to the kernel

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


@dataclass(slots=True)
class ListenerStats:
    """Connections closed by the router before any handler saw them."""

    head_timeouts: int = 0  # the head did not arrive within HEAD_TIMEOUT
    head_too_large: int = 0  # the head grew over MAX_HEAD
    closed_before_head: int = 0  # the peer closed (or reset) before a full head

    def to_dict(self) -> dict[str, int]:
        return {
            "head_timeouts": self.head_timeouts,
            "head_too_large": self.head_too_large,
            "closed_before_head": self.closed_before_head,
        }


HeadResult = Literal["timeout", "too_large", "closed"]


async def read_head(
    stream: trio.abc.ReceiveStream, *, max_bytes: int = MAX_HEAD
) -> bytes | HeadResult:
    """Read until the end of the request head (a blank line).

    Returns everything read (the head and whatever came right behind it), or
    why not: ``timeout`` (the whole head, not each read, is timed),
    ``too_large`` or ``closed``.
    """
    buf = bytearray()
    with trio.move_on_after(HEAD_TIMEOUT):
        scanned = 0
        while True:
            end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
            if end != -1:
                return bytes(buf) if end + 4 <= max_bytes else "too_large"
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


async def _refuse(conn: trio.SocketStream, status: bytes) -> None:
    """A minimal HTTP error, best effort, then the caller closes."""
    with trio.move_on_after(REFUSE_TIMEOUT):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await conn.send_all(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )


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
        self.stats = ListenerStats()

    async def handle(self, conn: trio.SocketStream) -> None:
        try:
            head = await read_head(conn)
            if isinstance(head, bytes):
                if is_stream_request(head):
                    await self._stream(conn, head)
                else:
                    await self._http(PrefixedStream(conn, head))
            else:
                await self._refused(conn, head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # One connection's failure must never take the listener down.
            log.exception("connection handler failed")
        finally:
            await trio.aclose_forcefully(conn)

    async def _refused(self, conn: trio.SocketStream, why: HeadResult) -> None:
        peer = _peer(conn)
        if why == "closed":
            self.stats.closed_before_head += 1
            log.debug("connection from %s closed before a full request head", peer)
        elif why == "timeout":
            self.stats.head_timeouts += 1
            log.info(
                "closing connection from %s: request head not complete after %.0f s (%d so far)",
                peer,
                HEAD_TIMEOUT,
                self.stats.head_timeouts,
            )
            await _refuse(conn, b"408 Request Timeout")
        else:
            self.stats.head_too_large += 1
            log.info(
                "closing connection from %s: request head over %d bytes (%d so far)",
                peer,
                MAX_HEAD,
                self.stats.head_too_large,
            )
            await _refuse(conn, b"431 Request Header Fields Too Large")


def _peer(conn: trio.SocketStream) -> str:
    try:
        return str(conn.socket.getpeername()[:2])
    except OSError:
        return "?"
