"""One hand-over per connection per scheduler tick for every AI frame of a room.

Drafts flushing at the same moment (say 50 AIs answering one message in a
room of 200) would otherwise cost 50 x 200 socket writes in one burst; the
pump collects the frames queued during a tick per room and gives each member
connection all of them at once (``Hub.send_ephemeral_batch``: each frame
encoded once, the encoded frames joined, one write per connection).
Frames of one room keep their order.
"""

from __future__ import annotations

from typing import Any

import trio

from homeserver.live.hub import Hub


class FramePump:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._wake = trio.Event()

    def send(self, room_id: str, payload: dict[str, Any]) -> None:
        """Queue a frame for every member of the room; sent at the end of this tick."""
        queued = self._pending.get(room_id)
        if queued is None:
            self._pending[room_id] = [payload]
            self._wake.set()
        else:
            queued.append(payload)

    def flush(self, room_id: str | None = None) -> None:
        """Send what is queued now (for one room, or all)."""
        if room_id is not None:
            rooms = [room_id] if room_id in self._pending else []
        else:
            rooms = list(self._pending)
        for room in rooms:
            payloads = self._pending.pop(room)
            self._hub.send_ephemeral_batch(self._hub.members_of(room), payloads)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self.flush()
        finally:
            self.flush()
