"""hypercorn's per-connection HTTP/1.1 server, with two gaps closed.

1. **EOF on an idle keep-alive connection.** hypercorn stops reading at EOF,
   but its keep-alive timer task keeps the connection's task group (and the
   socket) alive until ``keep_alive_timeout`` (75 s). Here the timer is
   stopped when reading ends, so the socket is released at once.
2. **Slow heads after the first request.** The router bounds the first
   request head; hypercorn's keep-alive timer does not restart when bytes of
   the next request arrive, and nothing times the head once it has begun.
   Here a request head that began arriving must be complete within
   :data:`homeserver.listener.HEAD_TIMEOUT`, or the connection is closed
   (counted in :class:`HttpStats`).
3. **Handing a connection back.** When a connection is idle between requests
   (the previous response complete, nothing buffered) and the next request line
   is one the listener's fast path serves (``handback``: the streamed session
   replies), hypercorn lets go of the connection without closing it and
   :meth:`HttpServer.run` leaves the bytes read in :attr:`HttpServer.returned`
   for the router (homeserver.listener), which serves that request itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from typing import Any

import h11
import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from homeserver import listener

log = logging.getLogger("homeserver.http")


@dataclass(slots=True)
class HttpStats:
    released_on_eof: int = 0  # connections released at once when the client closed
    head_timeouts: int = 0  # a later request's head did not complete in time
    handed_back: int = 0  # idle connections given back to the router for a fast-path request

    def to_dict(self) -> dict[str, int]:
        return {
            "released_on_eof": self.released_on_eof,
            "head_timeouts": self.head_timeouts,
            "handed_back": self.handed_back,
        }


class HttpServer(TCPServer):
    """One HTTP connection; see the module docstring."""

    def __init__(
        self,
        *args: Any,
        stats: HttpStats,
        handback: Callable[[bytes], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self._in_request = False  # a request head was parsed; its response is not done
        self._head_deadline = inf  # set when the first bytes of a request head arrive
        self._handback = handback
        self._answered = False  # a response completed (so the router's request was served)
        self.returned: bytes | None = None  # bytes of the request handed back to the router

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            # idle=False: a request head was parsed; idle=True: ready for the next.
            self._in_request = not event.idle
            self._answered = self._answered or event.idle
            self._head_deadline = inf
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        read_timeout = self.config.read_timeout or inf
        eof = False
        while True:
            now = trio.current_time()
            try:
                with trio.fail_after(max(0.0, min(now + read_timeout, self._head_deadline) - now)):
                    data = await self.stream.receive_some(MAX_RECV)
            except trio.TooSlowError:
                if not self._in_request and trio.current_time() >= self._head_deadline:
                    self.stats.head_timeouts += 1
                    log.info(
                        "closing HTTP connection: request head not complete after %.0f s (%d)",
                        listener.HEAD_TIMEOUT,
                        self.stats.head_timeouts,
                    )
                break
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if data and not self._in_request and self._head_deadline == inf:
                if self._hand_back(bytes(data)):
                    await self.idle_task.stop()  # its keep-alive timer would close the socket
                    return
                # The first bytes of a request head: it has HEAD_TIMEOUT to complete.
                self._head_deadline = trio.current_time() + listener.HEAD_TIMEOUT
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                eof = True
                break
        await self.protocol.handle(Closed())
        if eof:
            self.stats.released_on_eof += 1
        # Nothing more will be read, so no next request: the keep-alive timer
        # must not hold the connection (a response in flight still completes,
        # and hypercorn closes after it: the client's side is closed).
        await self.idle_task.stop()

    def _hand_back(self, data: bytes) -> bool:
        """Let go of an idle connection whose next request the router's fast path wants."""
        if self._handback is None or not self._answered or not self._handback(data):
            return False
        conn = getattr(getattr(self.protocol, "protocol", None), "connection", None)
        if not isinstance(conn, h11.Connection) or conn.trailing_data[0]:
            return False  # a WebSocket, or bytes of a request hypercorn already holds
        if conn.our_state is not h11.IDLE or conn.their_state is not h11.IDLE:
            return False
        self.returned = data
        self.stats.handed_back += 1
        return True

    async def _close(self) -> None:
        if self.returned is not None:
            return  # the connection goes back to the router, open
        await super()._close()
