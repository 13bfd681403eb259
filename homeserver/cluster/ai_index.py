"""The AI participant index across processes.

Each process's AI runner keeps the live AI participants in memory (loaded at
start). A create or delete on one process is announced on ``{prefix}:ai``; the
others read the AI (and the rooms it has joined) from the database and tell
their runner. Best effort like the bus: a process that missed an announcement
knows the AI after its next restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from homeserver.cluster.bus import Bus
from homeserver.cluster.channel import Announcements
from homeserver.store.database import Readers
from storage import ai as ai_store


class ClusterAiIndex:
    def __init__(self, bus: Bus, readers: Readers, *, node_id: str, prefix: str) -> None:
        self._readers = readers
        self._channel = Announcements(bus, f"{prefix}:ai", node_id=node_id, handle=self._on_message)
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
        self._channel.announce({"op": "created", "id": ai.participant_id})

    def deleted(self, ai_id: str) -> None:
        self._removed(ai_id)
        self._channel.announce({"op": "deleted", "id": ai_id})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._channel.run(task_status=task_status)

    async def _on_message(self, msg: dict[str, Any]) -> None:
        ai_id = msg.get("id")
        if not isinstance(ai_id, str):
            return
        if msg.get("op") == "deleted":
            self._removed(ai_id)
            return
        ai = await self._readers.read(ai_store.get_ai, ai_id)
        rooms = await self._readers.read(ai_store.joined_rooms, ai_id)
        if ai is not None:
            self._added(ai)
            self._joined(ai_id, rooms)  # joins the feed showed before the AI was known
