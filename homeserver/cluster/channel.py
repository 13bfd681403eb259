"""One best-effort announcement channel on the bus (shared by the cluster's small indexes).

``announce`` queues a JSON object (tagged with this node's id) without waiting;
``run`` publishes the queue and hands every other node's objects to
``handle``. A lost bus connection is logged and resubscribed after 0.5 s; what
was announced meanwhile may be lost, like everything on the bus.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from homeserver.cluster.bus import Bus, BusError
from protocol.cluster import BusMessageError, decode_object, encode_object

log = logging.getLogger("homeserver.cluster")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Announcements:
    def __init__(self, bus: Bus, channel: str, *, node_id: str, handle: Handler) -> None:
        self._bus = bus
        self.channel = channel
        self._node = node_id
        self._handle = handle
        self._send, self._outbox = trio.open_memory_channel[dict[str, Any]](1024)

    def announce(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait({**msg, "node": self._node})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish)
            nursery.start_soon(self._listen)
            task_status.started()

    async def _publish(self) -> None:
        async for msg in self._outbox:
            with contextlib.suppress(BusError):
                await self._bus.publish(self.channel, encode_object(msg))

    async def _listen(self) -> None:
        while True:
            try:
                async with self._bus.subscribe(self.channel) as messages:
                    async for _, data in messages:
                        try:
                            msg = decode_object(data)
                        except BusMessageError:
                            continue
                        node = msg.get("node")
                        if isinstance(node, str) and node != self._node:
                            await self._handle(msg)
            except BusError as exc:
                log.warning("cluster %s: bus lost (%s)", self.channel, exc)
            await trio.sleep(0.5)
