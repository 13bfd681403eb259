"""One SSE reply written straight to a socket, fed by the generation itself (write-through).

The Quart path hands each delta over twice: the generation task sets an event, the
response task wakes, and its write goes through Quart, hypercorn and h11 before
``send_all``. Here the generation calls :meth:`SocketWriter._on_change` synchronously
on every delta (:meth:`homeserver.sessions.Generation.listen`); while the socket is
writable and nothing is queued, the new chunk is written by one non-blocking ``send``
from the generation task itself, and the writer task sleeps on. Only when the kernel's
send buffer is full (a slow reader) does the rest wait in :attr:`_pending` for the
writer task, which blocks in ``send_all`` and meanwhile takes nothing more than what
piles up in ``Generation.parts``: the next write carries all of it (one chunk per
delta, one write), so a slow reader costs one pending write's memory, not the reply's.

The body's bytes come from :class:`homeserver.http.sse.ReplyBody`, the same as the
Quart route's. The framing is HTTP/1.1 chunked: every write is one chunk and the
end adds the last chunk, so the connection can carry the client's next request.
A peer that closes (EOF or a reset) ends the response at once; the reply goes on.

:func:`write_events` is the plainer writer for a body that is an async generator of
events (ScaiBot's ``POST /chat``): each event one chunk, written by one non-blocking
``send`` as it is produced; a peer that goes away cancels the generator.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable

import trio

from homeserver.http.sse import ReplyBody
from homeserver.identity.auth import Principal
from protocol.errors import ApiError, ErrorCode
from protocol.sse import KEEPALIVE

log = logging.getLogger("homeserver.http.sse")

LAST_CHUNK = b"0\r\n\r\n"
MAX_LEFTOVER = 16384  # bytes of a pipelined next request kept while streaming (MAX_HEAD)


def frame(data: bytes, last: bool = False) -> bytes:
    """``data`` as one HTTP/1.1 chunk (none when empty), plus the last chunk if ``last``."""
    out = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
    return out + LAST_CHUNK if last else out


class SocketWriter:
    """Writes one reply's SSE body to ``conn``; see the module docstring.

    Also a :class:`homeserver.stream.registry.Closable`: a revoked credential ends the
    body with an ``error`` event and ``[DONE]`` (the reply itself goes on and is stored).
    """

    def __init__(
        self,
        conn: trio.SocketStream,
        body: ReplyBody,
        *,
        heartbeat: float,
        principal: Principal,
    ) -> None:
        self._conn = conn
        self._fd = conn.socket.fileno()
        self._body = body
        self._heartbeat = heartbeat
        self._pending = b""  # framed bytes the writer task must send
        self._writing = False  # the writer task is inside send_all
        self._wake = trio.Event()
        self.broken = False  # the peer went away (or the socket failed)
        self.cut: ApiError | None = None  # why the body was ended early (revocation)
        self.principal = principal
        self.participant_id = principal.participant_id
        self.leftover = bytearray()  # what the client sent after its request

    # -- fed by the generation task ---------------------------------------------------

    def _on_change(self) -> None:
        """Called by the generation task on every delta and at the end; never raises."""
        if self.broken or self.cut is not None:
            return
        if self._writing or self._pending:
            self._wake.set()  # the writer task takes it after its write
            return
        try:
            body = self._body
            out = body.take()
            if not out:
                return
            data = frame(out, body.ended)
            sent = self._send_now(data)
        except Exception:  # a bug here must not fail the generation: end this response
            log.exception("SSE write-through failed")
            self._gone()
            return
        if sent < len(data):
            self._pending = data[sent:]
            self._wake.set()
        elif body.ended:
            self._wake.set()

    def _send_now(self, data: bytes) -> int:
        """One non-blocking send: how much the kernel took (all of it when broken)."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            self._gone()
            return len(data)

    def _gone(self) -> None:
        self.broken = True
        self._wake.set()

    # -- Closable (revocation) ----------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        self.close_unauthorised("SW_AUTH_INVALID_TOKEN", reason)

    def close_unauthorised(self, reason: str, why: str) -> None:
        if self.cut is not None or self.broken or self._body.ended:
            return
        code = ErrorCode.SW_AUTH_INVALID_TOKEN
        if reason == "SW_AUTH_EXPIRED_TOKEN":
            code = ErrorCode.SW_AUTH_EXPIRED_TOKEN
        log.info("ending the SSE reply %s: %s", self._body.gen.message_id, why)
        self.cut = ApiError(code, f"the credential was revoked ({why})")
        self._wake.set()

    # -- the writer task ----------------------------------------------------------------

    async def run(self, head: bytes) -> bool:
        """Write the response (``head`` first); True when it ended normally."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_peer)
            try:
                return await self._write(head)
            finally:
                nursery.cancel_scope.cancel()

    async def _write(self, head: bytes) -> bool:
        body, gen = self._body, self._body.gen
        self._pending = head + frame(body.opening() + body.take(), body.ended)
        gen.listen(self._on_change)
        try:
            while True:
                if self.broken:
                    return False
                if self._pending:
                    data, self._pending = self._pending, b""
                    self._writing = True
                    try:
                        await self._conn.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.broken = True
                        return False
                    finally:
                        self._writing = False
                    out = body.take() if self.cut is None else b""
                    if out:  # what came while we wrote (the end at most once)
                        self._pending = frame(out, body.ended)
                    continue
                if body.ended:
                    return self.cut is None
                if self.cut is not None:
                    gen.unlisten(self._on_change)
                    self._pending = frame(body.cut(self.cut), last=True)
                    continue
                self._wake = trio.Event()
                if body.index == 0:  # heartbeats only until the first token
                    with trio.move_on_after(self._heartbeat) as waited:
                        await self._wake.wait()
                    if waited.cancelled_caught and body.index == 0 and not self._pending:
                        self._pending = frame(KEEPALIVE)
                else:
                    await self._wake.wait()
        finally:
            gen.unlisten(self._on_change)

    async def _watch_peer(self) -> None:
        await watch_peer(self._conn, self.leftover, self._gone)


async def watch_peer(
    conn: trio.SocketStream, leftover: bytearray, gone: Callable[[], object]
) -> None:
    """Read while a response is written: EOF or a reset calls ``gone``; what the client
    sends meanwhile (a pipelined next request) is kept in ``leftover``, up to a limit."""
    while len(leftover) <= MAX_LEFTOVER:
        data = b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            data = await conn.receive_some(4096)
        if not data:
            gone()
            return
        leftover += data


async def write_events(
    conn: trio.SocketStream, head: bytes, events: AsyncGenerator[bytes, None]
) -> tuple[bool, bytes]:
    """Write ``head``, then every item of ``events`` as one HTTP/1.1 chunk, then the last
    chunk: (True, what the client sent meanwhile) when complete, (False, b"") when not.

    Each item is written by one non-blocking ``send`` as soon as it is produced; only what
    the kernel does not take is awaited (a slow reader holds the producer back, as an ASGI
    server's ``send`` does). The peer going away (EOF, a reset) cancels the iteration, so
    the producer sees ``Cancelled`` where it waits, or ``GeneratorExit`` at its ``yield``;
    ``events`` is closed either way.
    """
    fd = conn.socket.fileno()
    leftover = bytearray()
    complete = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_peer, conn, leftover, nursery.cancel_scope.cancel)
        try:
            async with contextlib.aclosing(events):
                pending = head
                async for data in events:
                    pending += frame(data)
                    await _write(conn, fd, pending)
                    pending = b""
                await _write(conn, fd, pending + LAST_CHUNK)
            complete = True
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away while we wrote
        finally:
            nursery.cancel_scope.cancel()
    return (True, bytes(leftover)) if complete else (False, b"")


async def _write(conn: trio.SocketStream, fd: int, data: bytes) -> None:
    """``data`` to the socket: one non-blocking ``send``, then ``send_all`` for the rest."""
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        await conn.send_all(data[sent:])
