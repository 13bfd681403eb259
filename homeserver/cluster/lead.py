"""The presence/typing lead: one lease per cluster, and the sender that lets frames out.

``Lease`` takes and renews ``{prefix}:eph-leader`` (``SET NX PX``, 3 s, renewed every
second; released on a clean stop). ``ClusterSender`` is the hub the replicated
services (homeserver.cluster.ephemeral) send through: only the lease holder's frames
reach the bus.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio

from homeserver.cluster.bus import Bus, BusError
from homeserver.live.hub import Hub

log = logging.getLogger("homeserver.cluster")

OUTBOX = 4096
HELD = 1024  # frames a follower keeps for a takeover


class Lease:
    """Leadership: ``key`` held for ``ttl`` seconds, renewed every ``every`` seconds."""

    def __init__(self, bus: Bus, key: str, owner: str, *, ttl: float = 3.0, every: float = 1.0):
        self._bus = bus
        self._key = key
        self._owner = owner
        self.ttl = ttl
        self._every = every
        self.is_leader = False
        self.changes = 0
        self.on_lead: Callable[[], None] = lambda: None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._hold()
        finally:
            self.is_leader = False

    async def _hold(self) -> None:
        while True:
            try:
                held = await self._bus.lease(self._key, self._owner, int(self.ttl * 1000))
            except BusError:
                held = False  # cannot prove it: step down
            if held != self.is_leader:
                self.is_leader = held
                self.changes += 1
                log.info(
                    "cluster: %s %s the ephemeral lead", self._owner, "took" if held else "lost"
                )
                if held:
                    self.on_lead()
            await trio.sleep(self._every)

    async def release(self) -> None:
        """Give the lease up (a clean stop), so another process takes it at once."""
        if self.is_leader:
            self.is_leader = False
            with contextlib.suppress(BusError):
                await self._bus.release(self._key, self._owner)


class ClusterSender:
    """The services' hub (``EphemeralHub``): reads from the local hub; frames leave only
    from the leader, onto the bus.

    A follower holds the frames it computed for one lease TTL: a process that
    takes the lead sends the last of them per participant, room and audience
    (the old leader may have died without sending them; one that it did send
    is restated, which changes nothing for the client).
    """

    def __init__(self, hub: Hub, lease: Lease) -> None:
        self._hub = hub
        self._lease = lease
        self.send, self.outbox = trio.open_memory_channel[dict[str, Any]](OUTBOX)
        self._held: deque[tuple[float, dict[str, Any]]] = deque(maxlen=HELD)
        self.dropped = 0
        lease.on_lead = self.flush_held

    def flush_held(self) -> None:
        horizon = trio.current_time() - self._lease.ttl - 1.0
        held, self._held = self._held, deque(maxlen=HELD)
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for at, msg in held:  # only the last state per participant, room and audience
            if at >= horizon:
                payload = msg["payloads"][0]
                kind, pid, room = (payload.get(k) for k in ("type", "participant_id", "room_id"))
                key = (kind, pid, room, *msg["pids"])
                latest.pop(key, None)  # re-inserted: sent in the order of the last change
                latest[key] = msg
        for msg in latest.values():
            self._out(msg)

    def _out(self, msg: dict[str, Any]) -> bool:
        try:
            self.send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        return True

    def rooms_of(self, participant_id: str) -> frozenset[str]:
        return self._hub.rooms_of(participant_id)

    def members_of(self, room_id: str) -> frozenset[str]:
        return self._hub.members_of(room_id)

    def is_member(self, room_id: str, participant_id: str) -> bool:
        return self._hub.is_member(room_id, participant_id)

    def send_ephemeral(self, participant_ids: Iterable[str], payload: dict[str, object]) -> int:
        pids = sorted(participant_ids)
        if not pids:
            return 0
        msg = {"pids": pids, "payloads": [payload]}
        if not self._lease.is_leader:
            self._held.append((trio.current_time(), msg))
            return 0
        return len(pids) if self._out(msg) else 0
