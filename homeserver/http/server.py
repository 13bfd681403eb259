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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import inf
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from homeserver import listener

log = logging.getLogger("homeserver.http")


@dataclass(slots=True)
class HttpStats:
    released_on_eof: int = 0  # connections released at once when the client closed
    head_timeouts: int = 0  # a later request's head did not complete in time

    def to_dict(self) -> dict[str, int]:
        return {"released_on_eof": self.released_on_eof, "head_timeouts": self.head_timeouts}


class HttpServer(TCPServer):
    """One HTTP connection; see the module docstring."""

    def __init__(self, *args: Any, stats: HttpStats, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self._in_request = False  # a request head was parsed; its response is not done
        self._head_deadline = inf  # set when the first bytes of a request head arrive

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            # idle=False: a request head was parsed; idle=True: ready for the next.
            self._in_request = not event.idle
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
