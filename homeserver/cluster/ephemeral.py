"""Presence and typing across processes: replicated inputs, one leader sends the frames.

Rules
-----
1. Every process runs the existing ``PresenceService`` and ``TypingService``
   (``ClusterPresence``/``ClusterTyping`` are them plus an input hook). Each
   input (connected, disconnected, heartbeat, active, manual, typing) is
   applied locally at once and published on ``{prefix}:eph-in`` (activity at
   most every ``ACTIVE_EVERY`` seconds per participant); every other process
   applies it too. So every process holds the same state: ``GET
   /presence`` and the room snapshot read it locally, and a new leader takes
   over with the state it already has (nothing to rebuild after failover).
2. One leader per cluster holds the lease ``{prefix}:eph-leader`` (``SET NX
   PX``, renewed every second). Only its services' frames leave: its sender
   publishes ``{pids, payloads}`` on ``{prefix}:eph`` and every process (the
   leader too) hands them to its local subscribers; the other processes'
   services compute the same frames and drop them. One frame per change,
   cluster-wide.
3. Connections are counted per node. A node refreshes its liveness key
   ``{prefix}:node:{id}`` and says ``alive`` every ``liveness/3`` seconds; a
   node neither heard from nor holding its key for ``liveness`` seconds
   (``kill -9``) is dropped: its connections end, its users go offline.
4. Every node sends its full local connection set every ``sync_every``
   seconds and when another node says ``hello`` (after it (re)subscribed), so
   a lost message or a restarted process converges. Manual states are kept in
   the hash ``{prefix}:manual`` for processes that start later.
5. The bus is at most once: a lost input is repaired by rule 4 (connections)
   or by the client's next heartbeat/typing refresh; at most one coalesce
   window of frames is lost when the leader changes.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from homeserver.cluster.bus import Bus, BusError
from homeserver.cluster.lead import OUTBOX, ClusterSender, Lease
from homeserver.live.ephemeral import PresenceService, TypingService
from homeserver.live.hub import Hub
from protocol.cluster import BusMessageError, decode_object, encode_object
from protocol.errors import ApiError

log = logging.getLogger("homeserver.cluster")

Inputs = Callable[[dict[str, Any]], None]
ACTIVE_EVERY = 2.0  # seconds between two "active" announcements of one participant


class ClusterPresence(PresenceService):
    """``PresenceService`` whose local inputs are also published; remote ones applied."""

    def __init__(self, *args: Any, inputs: Inputs, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inputs = inputs
        # Activity (every send, every typing) is announced at most this often per
        # participant: remote processes then see "idle" at most this late.
        self._active_every = min(ACTIVE_EVERY, self._idle_after / 10)
        self._active_said: dict[str, float] = {}
        self.local: Counter[str] = Counter()  # this node's connections per participant
        self.local_kind: dict[str, str] = {}
        self.remote: dict[str, Counter[str]] = {}  # node -> participant -> connections

    # -- local inputs (rule 1) ----------------------------------------------------

    def connected(self, pid: str, participant_type: str) -> None:
        self.local[pid] += 1
        self.local_kind[pid] = participant_type
        super().connected(pid, participant_type)
        self._inputs({"op": "connected", "pid": pid, "kind": participant_type})

    def disconnected(self, pid: str) -> None:
        if self.local[pid] > 0:
            self.local[pid] -= 1
        if self.local[pid] <= 0:
            del self.local[pid]
            self.local_kind.pop(pid, None)
        super().disconnected(pid)
        self._inputs({"op": "disconnected", "pid": pid})

    def heartbeat(self, pid: str, active: bool) -> None:
        super().heartbeat(pid, active)
        self._inputs({"op": "heartbeat", "pid": pid, "active": active})

    def active(self, pid: str) -> None:
        super().active(pid)
        now = trio.current_time()
        if now - self._active_said.get(pid, -math.inf) >= self._active_every:
            if len(self._active_said) > 10_000:
                self._active_said.clear()
            self._active_said[pid] = now
            self._inputs({"op": "active", "pid": pid})

    def set_manual(self, pid: str, state: str) -> None:
        super().set_manual(pid, state)
        self._inputs({"op": "manual", "pid": pid, "state": state})

    # -- remote inputs ---------------------------------------------------------------

    def apply(self, node: str, msg: dict[str, Any]) -> None:
        op, pid = msg.get("op"), msg.get("pid")
        if not isinstance(pid, str):
            return
        counts = self.remote.setdefault(node, Counter())
        if op == "connected":
            counts[pid] += 1
            PresenceService.connected(self, pid, str(msg.get("kind", "human")))
        elif op == "disconnected" and counts[pid] > 0:
            counts[pid] -= 1
            PresenceService.disconnected(self, pid)
        elif op == "heartbeat":
            PresenceService.heartbeat(self, pid, bool(msg.get("active")))
        elif op == "active":
            PresenceService.active(self, pid)
        elif op == "manual":
            self.apply_manual(pid, str(msg.get("state", "auto")))
        counts += Counter()  # drop zero counts

    def apply_manual(self, pid: str, state: str) -> None:
        with contextlib.suppress(ApiError):
            PresenceService.set_manual(self, pid, state)

    def sync(self, node: str, conns: dict[str, Any]) -> None:
        """``node``'s full connection set: reconcile what this process counted for it."""
        counts = self.remote.setdefault(node, Counter())
        wanted: dict[str, tuple[int, str]] = {}
        for pid, value in conns.items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
                wanted[pid] = (value[0], str(value[1]))
        for pid in set(counts) | set(wanted):
            have, (want, kind) = counts[pid], wanted.get(pid, (0, "human"))
            for _ in range(want - have):
                PresenceService.connected(self, pid, kind)
            for _ in range(have - want):
                PresenceService.disconnected(self, pid)
            counts[pid] = want
        counts += Counter()

    def drop_node(self, node: str) -> int:
        """``node`` is gone: end every connection it had. Returns how many."""
        counts = self.remote.pop(node, Counter())
        for pid, count in counts.items():
            for _ in range(count):
                PresenceService.disconnected(self, pid)
        return sum(counts.values())

    def knows(self, pid: str) -> bool:
        return pid in self._facts

    def local_set(self) -> dict[str, list[Any]]:
        return {pid: [n, self.local_kind.get(pid, "human")] for pid, n in self.local.items()}


class ClusterTyping(TypingService):
    """``TypingService`` whose local changes are also published; remote ones applied."""

    def __init__(self, *args: Any, inputs: Inputs, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inputs = inputs

    def set(self, pid: str, room_id: str, typing: bool) -> None:
        if not typing:
            self.clear(pid, room_id)
            return
        super().set(pid, room_id, True)
        self._inputs({"op": "typing", "pid": pid, "room": room_id, "typing": True})

    def clear(self, pid: str, room_id: str) -> None:
        if (room_id, pid) in self._until:
            super().clear(pid, room_id)
            self._inputs({"op": "typing", "pid": pid, "room": room_id, "typing": False})

    def apply(self, msg: dict[str, Any]) -> None:
        pid, room = msg.get("pid"), msg.get("room")
        if not (isinstance(pid, str) and isinstance(room, str)):
            return
        if msg.get("typing") is True:
            with contextlib.suppress(ApiError):  # this process has not seen the join yet
                TypingService.set(self, pid, room, True)
        else:
            TypingService.clear(self, pid, room)


class ClusterEphemeral:
    """Runs the replicated services, the lease, liveness and the sync (rules 1-4)."""

    def __init__(
        self,
        bus: Bus,
        hub: Hub,
        *,
        node_id: str,
        prefix: str,
        liveness: float,
        sync_every: float = 10.0,
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._node = node_id
        self._prefix = prefix
        self._liveness = liveness
        self._sync_every = sync_every
        self.lease = Lease(bus, f"{prefix}:eph-leader", node_id)
        self.sender = ClusterSender(hub, self.lease)
        self._in_send, self._in = trio.open_memory_channel[dict[str, Any]](OUTBOX)
        self._heard: dict[str, float] = {}
        self._sync_now = trio.Event()
        self.presence: ClusterPresence | None = None
        self.typing: ClusterTyping | None = None
        self.dropped_nodes = 0
        self.dropped_inputs = 0

    @property
    def in_channel(self) -> str:
        return f"{self._prefix}:eph-in"

    @property
    def out_channel(self) -> str:
        return f"{self._prefix}:eph"

    def inputs(self, msg: dict[str, Any]) -> None:
        """The services' input hook (sync, never blocks)."""
        try:
            self._in_send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped_inputs += 1

    def attach(self, presence: ClusterPresence, typing: ClusterTyping) -> None:
        self.presence, self.typing = presence, typing

    # -- tasks ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.presence is not None
        assert self.typing is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.presence.run)
            await nursery.start(self.typing.run)
            await nursery.start(self.lease.run)
            nursery.start_soon(self._publish_inputs)
            nursery.start_soon(self._publish_frames)
            nursery.start_soon(self._subscribe_loop)
            nursery.start_soon(self._liveness_loop)
            nursery.start_soon(self._sync_loop)
            task_status.started()

    async def _publish(self, channel: str, msg: dict[str, Any]) -> bool:
        try:
            await self._bus.publish(channel, encode_object(msg))
        except BusError:
            return False
        return True

    async def _publish_inputs(self) -> None:
        async for msg in self._in:
            msg["node"] = self._node
            if not await self._publish(self.in_channel, msg):
                self.dropped_inputs += 1
            if msg.get("op") == "manual":
                state = str(msg["state"])
                with contextlib.suppress(BusError):
                    await self._bus.hash_set(
                        f"{self._prefix}:manual",
                        str(msg["pid"]),
                        None if state == "auto" else state,
                    )

    async def _publish_frames(self) -> None:
        async for msg in self.sender.outbox:
            await self._publish(self.out_channel, msg)

    async def _subscribe_loop(self) -> None:
        while True:
            try:
                async with self._bus.subscribe(self.in_channel, self.out_channel) as messages:
                    await self._on_connected()
                    async for channel, data in messages:
                        self._on_message(channel, data)
            except BusError as exc:
                log.warning("cluster ephemeral: bus lost (%s)", exc)
            await trio.sleep(0.5)

    async def _on_connected(self) -> None:
        assert self.presence is not None
        await self._publish(self.in_channel, {"op": "hello", "node": self._node})
        self._sync_now.set()
        try:
            manual = await self._bus.hash_all(f"{self._prefix}:manual")
        except BusError:
            return
        for pid, state in manual.items():
            if not self.presence.knows(pid):
                self.presence.apply_manual(pid, state)

    def _on_message(self, channel: str, data: bytes) -> None:
        try:
            msg = decode_object(data)
        except BusMessageError:
            return
        if channel == self.out_channel:
            pids, payloads = msg.get("pids"), msg.get("payloads")
            if isinstance(pids, list) and isinstance(payloads, list):
                self._hub.send_ephemeral_batch([str(p) for p in pids], payloads)
            return
        node = msg.get("node")
        if not isinstance(node, str) or node == self._node:
            return
        assert self.presence is not None
        assert self.typing is not None
        self._heard[node] = trio.current_time()
        op = msg.get("op")
        if op == "typing":
            self.typing.apply(msg)
        elif op == "sync" and isinstance(msg.get("conns"), dict):
            self.presence.sync(node, msg["conns"])
        elif op == "hello":
            self._sync_now.set()
        elif op == "bye":
            self.presence.drop_node(node)
        elif op != "alive":
            self.presence.apply(node, msg)

    async def _liveness_loop(self) -> None:
        every = self._liveness / 3
        ttl_ms = int(self._liveness * 1000)
        while True:
            with contextlib.suppress(BusError):
                await self._bus.set_expiring(f"{self._prefix}:node:{self._node}", "1", ttl_ms)
            await self._publish(self.in_channel, {"op": "alive", "node": self._node})
            await self._drop_dead()
            await trio.sleep(every)

    async def _drop_dead(self) -> None:
        assert self.presence is not None
        now = trio.current_time()
        quiet = [
            n for n in self.presence.remote if now - self._heard.get(n, -math.inf) >= self._liveness
        ]
        if not quiet:
            return
        try:
            alive = await self._bus.existing([f"{self._prefix}:node:{n}" for n in quiet])
        except BusError:
            return  # cannot tell who is gone while the bus is down
        for node, present in zip(quiet, alive, strict=True):
            if not present:
                ended = self.presence.drop_node(node)
                self._heard.pop(node, None)
                self.dropped_nodes += 1
                log.warning("cluster: node %s is gone; %d of its connections ended", node, ended)

    async def _sync_loop(self) -> None:
        assert self.presence is not None
        while True:
            with trio.move_on_after(self._sync_every):
                await self._sync_now.wait()
            self._sync_now = trio.Event()
            msg = {"op": "sync", "node": self._node, "conns": self.presence.local_set()}
            await self._publish(self.in_channel, msg)

    async def say_goodbye(self) -> None:
        """On a clean stop: the others end this node's connections at once."""
        with trio.move_on_after(1):
            await self.lease.release()
            await self._publish(self.in_channel, {"op": "bye", "node": self._node})
