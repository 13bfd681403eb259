"""``duplicate_connection`` across processes.

A connection that registers with ``close_duplicate`` closes the older ones on
its own process (homeserver.stream.registry) and announces
``{token, node, at}`` on ``{prefix}:conn`` (``token`` is the credential's
SHA-256, never the secret). Every other process closes its connections on
that token that are older than the announced one (``at`` is the wall clock in
ms, ties broken by node id), so of two racing sockets the newer survives.
Best effort, like the bus: a lost announcement leaves both open.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from homeserver.clock import WallClock
from homeserver.cluster.bus import Bus, BusError
from homeserver.stream.registry import CLOSE_ABORT, Closable, Registry
from protocol.cluster import BusMessageError, decode_object, encode_object

log = logging.getLogger("homeserver.cluster")


class ClusterRegistry(Registry):
    def __init__(self, bus: Bus, *, node_id: str, prefix: str, clock: WallClock) -> None:
        super().__init__()
        self._bus = bus
        self._node = node_id
        self._channel = f"{prefix}:conn"
        self._clock = clock
        self._opened: dict[Closable, tuple[int, str]] = {}
        self._send, self._outbox = trio.open_memory_channel[dict[str, Any]](1024)
        self.remote_closes = 0

    def add(self, conn: Closable, *, close_duplicate: bool) -> None:
        stamp = (self._clock(), self._node)
        self._opened[conn] = stamp
        super().add(conn, close_duplicate=close_duplicate)
        if close_duplicate:
            msg = {"token": conn.principal.token_key, "node": self._node, "at": stamp[0]}
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(msg)

    def release(self, conn: Closable) -> None:
        self._opened.pop(conn, None)
        super().release(conn)

    def close_older(self, token: str, stamp: tuple[int, str]) -> int:
        older = [c for c in self._by_token.get(token, ()) if self._opened.get(c, stamp) < stamp]
        for conn in older:
            conn.close(CLOSE_ABORT, "duplicate_connection")
        self.remote_closes += len(older)
        return len(older)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish)
            nursery.start_soon(self._listen)
            task_status.started()

    async def _publish(self) -> None:
        async for msg in self._outbox:
            with contextlib.suppress(BusError):
                await self._bus.publish(self._channel, encode_object(msg))

    async def _listen(self) -> None:
        while True:
            try:
                async with self._bus.subscribe(self._channel) as messages:
                    async for _, data in messages:
                        self._on_message(data)
            except BusError as exc:
                log.warning("cluster connections: bus lost (%s)", exc)
            await trio.sleep(0.5)

    def _on_message(self, data: bytes) -> None:
        try:
            msg = decode_object(data)
        except BusMessageError:
            return
        token, node, at = msg.get("token"), msg.get("node"), msg.get("at")
        if not (isinstance(token, str) and isinstance(node, str) and isinstance(at, int)):
            return
        if node != self._node:
            self.close_older(token, (at, node))
