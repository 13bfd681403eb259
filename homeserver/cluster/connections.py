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

from typing import Any

import trio

from homeserver.clock import WallClock
from homeserver.cluster.bus import Bus
from homeserver.cluster.channel import Announcements
from homeserver.stream.registry import CLOSE_ABORT, Closable, Registry


class ClusterRegistry(Registry):
    def __init__(self, bus: Bus, *, node_id: str, prefix: str, clock: WallClock) -> None:
        super().__init__()
        self._node = node_id
        self._clock = clock
        self._opened: dict[Closable, tuple[int, str]] = {}
        self._channel = Announcements(
            bus, f"{prefix}:conn", node_id=node_id, handle=self._on_message
        )
        self.remote_closes = 0

    def add(self, conn: Closable, *, close_duplicate: bool) -> None:
        stamp = (self._clock(), self._node)
        self._opened[conn] = stamp
        super().add(conn, close_duplicate=close_duplicate)
        if close_duplicate:
            self._channel.announce({"token": conn.principal.token_key, "at": stamp[0]})

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
        await self._channel.run(task_status=task_status)

    async def _on_message(self, msg: dict[str, Any]) -> None:
        token, node, at = msg.get("token"), msg.get("node"), msg.get("at")
        if isinstance(token, str) and isinstance(node, str) and isinstance(at, int):
            self.close_older(token, (at, node))
