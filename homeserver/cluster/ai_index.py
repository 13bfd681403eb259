"""The AI participant index across processes.

Each process's AI runner keeps the live AI participants in memory (loaded at
start). A create or delete on one process is announced on ``{prefix}:ai``; the
others read the AI (and the rooms it has joined) from the database and tell
their runner. Best effort like the bus: a process that missed an announcement
knows the AI after its next restart.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from homeserver.cluster.bus import Bus, BusError
from homeserver.store.database import Readers
from protocol.cluster import BusMessageError, decode_object, encode_object
from storage import ai as ai_store

log = logging.getLogger("homeserver.cluster")


class ClusterAiIndex:
    def __init__(self, bus: Bus, readers: Readers, *, node_id: str, prefix: str) -> None:
        self._bus = bus
        self._readers = readers
        self._node = node_id
        self._channel = f"{prefix}:ai"
        self._send, self._outbox = trio.open_memory_channel[dict[str, Any]](1024)
        self._added: Callable[[ai_store.AiParticipant], None] = lambda ai: None
        self._removed: Callable[[str], None] = lambda ai_id: None
        self._joined: Callable[[str, list[str]], None] = lambda ai_id, rooms: None

    def serve(
        self,
        added: Callable[[ai_store.AiParticipant], None],
        removed: Callable[[str], None],
        joined: Callable[[str, list[str]], None],
    ) -> None:
        """The runner's hooks: an AI appeared (and the rooms it is in), or went."""
        self._added, self._removed, self._joined = added, removed, joined

    def created(self, ai: ai_store.AiParticipant) -> None:
        self._added(ai)
        self._announce({"op": "created", "id": ai.participant_id})

    def deleted(self, ai_id: str) -> None:
        self._removed(ai_id)
        self._announce({"op": "deleted", "id": ai_id})

    def _announce(self, msg: dict[str, Any]) -> None:
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
                await self._bus.publish(self._channel, encode_object(msg))

    async def _listen(self) -> None:
        while True:
            try:
                async with self._bus.subscribe(self._channel) as messages:
                    async for _, data in messages:
                        await self._on_message(data)
            except BusError as exc:
                log.warning("cluster ai index: bus lost (%s)", exc)
            await trio.sleep(0.5)

    async def _on_message(self, data: bytes) -> None:
        try:
            msg = decode_object(data)
        except BusMessageError:
            return
        ai_id, node = msg.get("id"), msg.get("node")
        if not isinstance(ai_id, str) or node == self._node:
            return
        if msg.get("op") == "deleted":
            self._removed(ai_id)
            return
        ai = await self._readers.read(ai_store.get_ai, ai_id)
        rooms = await self._readers.read(ai_store.joined_rooms, ai_id)
        if ai is not None:
            self._added(ai)
            self._joined(ai_id, rooms)  # joins the feed showed before the AI was known
