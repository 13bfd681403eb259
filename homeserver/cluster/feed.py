"""``ClusterFeed``: committed events from every process to this process's hub, in order.

writer.on_commit ──> feed.on_commit ──offer──> hub.publish_events
                          │                ^
                          └─> bus ─────────┘  (every other process; own copies skipped)

Rules
-----
1. The feed keeps ``applied`` (protocol.cluster.FeedCursor): the hub has been
   handed every position up to it, once, in order.
2. A batch at or below ``applied`` is dropped; one past a gap first reads the
   gap from the database; a positions-only batch reads its rows.
3. The local writer's batches go through the same cursor as every other
   process's (``offer``), synchronously when nothing is queued: with no gap the
   hub has them before the writer answers its callers, as in one process.
   They are published on the bus after that, never waited for.
4. On every (re)subscribe the feed subscribes first, then catches up to the
   database head; a watchdog reads the head whenever the bus has been silent
   for ``watchdog`` seconds (a dead subscription, a lost message).
5. Side effects that must happen once per cluster (the AI runner's replies)
   see only local events; other processes' events reach the hub's observer as
   membership changes only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from homeserver.cluster.bus import Bus, BusError
from homeserver.live.hub import Hub
from protocol.cluster import Batch, BusMessageError, FeedCursor, decode_batch, encode_batch
from protocol.events import Event, EventType

log = logging.getLogger("homeserver.cluster")

ReadRange = Callable[[int, int], Awaitable[list[Event]]]  # events in (after, upto], ascending
ReadHead = Callable[[], Awaitable[int]]
OUTBOX = 1024
DELIVER_CHUNK = 500


@dataclass(slots=True)
class FeedStats:
    bus_batches: int = 0
    local_batches: int = 0
    duplicates: int = 0
    gaps: int = 0
    head_checks: int = 0
    caught_up_events: int = 0
    reconnects: int = 0
    publish_failures: int = 0
    outbox_dropped: int = 0
    read_failures: int = 0
    bad_messages: int = 0


_HEAD = None  # an inbox item: "read the head and catch up"


class ClusterFeed:
    def __init__(
        self,
        bus: Bus,
        hub: Hub,
        *,
        node_id: str,
        channel: str,
        read_range: ReadRange,
        read_head: ReadHead,
        applied: int,
        watchdog: float = 1.0,
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._node = node_id
        self._channel = channel
        self._read_range = read_range
        self._read_head = read_head
        self._cursor = FeedCursor(applied)
        self._watchdog = watchdog
        self._inbox_send, self._inbox = trio.open_memory_channel[Batch | None](math.inf)
        self._out_send, self._out = trio.open_memory_channel[Batch](OUTBOX)
        self._pending = 0
        self._busy = False
        self._heard = 0.0
        self.head_seen = applied
        self.connected = False
        self.stats = FeedStats()

    @property
    def applied(self) -> int:
        return self._cursor.applied

    @property
    def lag(self) -> int:
        """Positions known committed (seen on the bus or read as the head) but not applied."""
        return max(0, self.head_seen - self._cursor.applied)

    # -- input ----------------------------------------------------------------

    def on_commit(self, events: Sequence[Event]) -> None:
        """The writer's callback: this process committed ``events`` (ascending, contiguous)."""
        if not events:
            return
        batch = Batch.of(self._node, events)
        self.stats.local_batches += 1
        self.offer(batch)
        try:
            self._out_send.send_nowait(batch)
        except trio.WouldBlock:
            self.stats.outbox_dropped += 1  # the others catch up from the database

    def offer(self, batch: Batch) -> None:
        """A batch from anywhere: applied now when nothing is queued and it needs no read."""
        self.head_seen = max(self.head_seen, batch.last)
        if not self._busy and self._pending == 0:
            plan = self._cursor.plan(batch)
            if plan is None:
                self.stats.duplicates += 1
                return
            if not plan.reads:
                self._deliver(self._cursor.take(plan.events), batch.node == self._node)
                return
        self._enqueue(batch)

    def _enqueue(self, item: Batch | None) -> None:
        self._pending += 1
        self._inbox_send.send_nowait(item)

    def check_head(self) -> None:
        """Ask for a head read and catch-up (after a reconnect; the watchdog)."""
        self._enqueue(_HEAD)

    # -- applying ---------------------------------------------------------------

    def _deliver(self, events: list[Event], local: bool) -> None:
        if not events:
            return
        hub = self._hub
        observer = hub.observer
        if local or observer is None:
            hub.publish_events(events)
            return

        def members_only(batch: Sequence[Event]) -> None:
            observer([e for e in batch if e.type is EventType.MEMBER])

        hub.observer = members_only
        try:
            hub.publish_events(events)
        finally:
            hub.observer = observer

    async def _handle(self, item: Batch | None) -> None:
        cursor = self._cursor
        if item is None:
            self.stats.head_checks += 1
            head = await self._read_head()
            self.head_seen = max(self.head_seen, head)
            plan = cursor.plan_head(head)
            local = False
        else:
            plan = cursor.plan(item)
            local = item.node == self._node
        if plan is None:
            if item is not None:
                self.stats.duplicates += 1
            return
        if plan.reads:
            if item is not None:
                self.stats.gaps += 1
            await self._catch_up(plan.read_upto)
        self._deliver(cursor.take(plan.events), local)

    async def _catch_up(self, upto: int) -> None:
        cursor = self._cursor
        while cursor.applied < upto:
            events = await self._read_range(cursor.applied, upto)
            run = cursor.take(events)
            if not run:
                log.warning("cluster feed: no rows after %d below %d", cursor.applied, upto)
                return
            self.stats.caught_up_events += len(run)
            for start in range(0, len(run), DELIVER_CHUNK):
                self._deliver(run[start : start + DELIVER_CHUNK], False)

    async def _apply_loop(self) -> None:
        async for item in self._inbox:
            self._pending -= 1
            self._busy = True
            try:
                await self._handle(item)
            except Exception:  # a failed read: the watchdog tries again
                self.stats.read_failures += 1
                log.exception("cluster feed: catch-up failed at %d", self.applied)
            finally:
                self._busy = False

    # -- the bus ------------------------------------------------------------------

    async def _subscribe_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._bus.subscribe(self._channel) as messages:
                    self.connected = True
                    backoff = 0.1
                    self.check_head()  # subscribed first, then catch up (rule 4)
                    async for _, data in messages:
                        self._heard = trio.current_time()
                        self._on_message(data)
            except BusError as exc:
                log.warning("cluster feed: bus lost (%s); catching up from the database", exc)
            self.connected = False
            self.stats.reconnects += 1
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _on_message(self, data: bytes) -> None:
        try:
            batch = decode_batch(data)
        except BusMessageError as exc:
            self.stats.bad_messages += 1
            log.warning("cluster feed: bad bus message (%s)", exc)
            return
        if batch.node == self._node:
            return  # offered at commit (rule 3)
        self.stats.bus_batches += 1
        self.offer(batch)

    async def _publish_loop(self) -> None:
        failing = False
        async for batch in self._out:
            try:
                await self._bus.publish(self._channel, encode_batch(batch))
                failing = False
            except BusError as exc:
                self.stats.publish_failures += 1
                if not failing:
                    log.warning("cluster feed: publish failed (%s); others catch up", exc)
                failing = True

    async def _watchdog_loop(self) -> None:
        while True:
            await trio.sleep(self._watchdog / 4)
            now = trio.current_time()
            if now - self._heard >= self._watchdog and self._pending == 0:
                self._heard = now
                self.check_head()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._heard = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_loop)
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._watchdog_loop)
            nursery.start_soon(self._subscribe_loop)
            task_status.started()

    def statistics(self) -> dict[str, int]:
        return {"applied": self.applied, "lag": self.lag, **dataclasses.asdict(self.stats)}
