"""The fan-out hub: committed events to the connections of joined members.

Rules
-----
1. The hub only ever sees committed events (the writer calls
   :meth:`Hub.publish_events` after each commit, in ``stream_position`` order).
2. Each event is encoded once; the same bytes go to every recipient.
3. Publishing never waits: a subscriber's ``deliver_events`` is synchronous and
   deals with its own overflow (it closes itself as a slow consumer).
4. One hand-over per subscriber per commit batch: a connection gets all of a
   batch's frames for it at once (one ``send()`` instead of one per event).
5. Membership changes apply at their own position: a joiner receives its join
   event and everything after; a kicked/banned/leaving member receives the
   event that removed them and nothing after.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
import trio

from protocol.events import Event, EventType, wire_event


class Subscriber(Protocol):
    participant_id: str

    def deliver_events(self, items: list[tuple[int, bytes]]) -> None:
        """Frames of persisted events, ascending by position."""

    def deliver_ephemeral(self, frame: bytes) -> None: ...


Encoder = Callable[[bytes], bytes]
RECENT_ENCODED = 4096  # encoded events kept for acks (a few commit batches' worth)


@dataclass(slots=True)
class HubStats:
    events: int = 0
    deliveries: int = 0
    ephemeral_deliveries: int = 0
    slow_consumers: int = 0


class Hub:
    def __init__(self, tenant_id: str, encode_frame: Encoder) -> None:
        self._tenant_id = tenant_id
        self._encode = encode_frame
        self._members: dict[str, set[str]] = defaultdict(set)
        self._rooms_of: dict[str, set[str]] = defaultdict(set)
        self._subs: dict[str, set[Subscriber]] = {}
        self._waiters: dict[str, trio.Event] = {}
        self._recent: dict[str, bytes] = {}
        self.position = 0
        # Told (participant_id, +1/-1) when a participant's connection count changes.
        self.on_connections: Callable[[Subscriber, int], None] = lambda sub, delta: None
        # Shown every published batch after delivery (the AI runner); must never block.
        self.observer: Callable[[Sequence[Event]], None] | None = None
        self.stats = HubStats()

    # -- membership ---------------------------------------------------------

    def load_memberships(self, pairs: Iterable[tuple[str, str]], position: int) -> None:
        for room_id, participant_id in pairs:
            self._join(room_id, participant_id)
        self.position = position

    def _join(self, room_id: str, participant_id: str) -> None:
        self._members[room_id].add(participant_id)
        self._rooms_of[participant_id].add(room_id)

    def _leave(self, room_id: str, participant_id: str) -> None:
        self._members[room_id].discard(participant_id)
        if not self._members[room_id]:
            del self._members[room_id]
        self._rooms_of[participant_id].discard(room_id)
        if not self._rooms_of[participant_id]:
            del self._rooms_of[participant_id]

    def rooms_of(self, participant_id: str) -> frozenset[str]:
        return frozenset(self._rooms_of.get(participant_id, ()))

    def members_of(self, room_id: str) -> frozenset[str]:
        return frozenset(self._members.get(room_id, ()))

    def is_member(self, room_id: str, participant_id: str) -> bool:
        return participant_id in self._members.get(room_id, ())

    # -- subscribers --------------------------------------------------------

    def attach(self, sub: Subscriber) -> None:
        subs = self._subs.setdefault(sub.participant_id, set())
        if sub not in subs:
            subs.add(sub)
            self.on_connections(sub, +1)

    def detach(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.participant_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.participant_id]
            self.on_connections(sub, -1)

    def connection_count(self, participant_id: str | None = None) -> int:
        if participant_id is not None:
            return len(self._subs.get(participant_id, ()))
        return sum(len(s) for s in self._subs.values())

    # -- publishing ---------------------------------------------------------

    def publish_events(self, events: Sequence[Event]) -> None:
        """Deliver committed events, in order. Never blocks."""
        batch: dict[Subscriber, list[tuple[int, bytes]]] = {}
        for event in events:
            self._publish_one(event, batch)
        for sub, items in batch.items():
            sub.deliver_events(items)
        if events:
            self.position = events[-1].stream_position
            if self.observer is not None:
                self.observer(events)

    def encoded(self, event_id: str) -> bytes | None:
        """The JSON of a recently published event (reused for acks), if still held."""
        return self._recent.get(event_id)

    def _publish_one(self, event: Event, batch: dict[Subscriber, list[tuple[int, bytes]]]) -> None:
        self.stats.events += 1
        target = event.content.get("participant_id")
        membership = event.content.get("membership")
        is_member_event = event.type is EventType.MEMBER and isinstance(target, str)
        if is_member_event and membership == "join":
            self._join(event.room_id, str(target))
        payload = orjson.dumps(wire_event(event, self._tenant_id))
        self._remember(event.event_id, payload)
        frame = self._encode(payload)
        recipients: Iterable[str] = self._members.get(event.room_id, ())
        if is_member_event and membership in ("invite", "leave", "ban"):
            recipients = {*recipients, str(target)}
        item = (event.stream_position, frame)
        subs_by_pid = self._subs
        waiters = self._waiters
        delivered = 0
        for pid in recipients:
            subs = subs_by_pid.get(pid)
            if subs:
                for sub in subs:
                    pending = batch.get(sub)
                    if pending is None:
                        batch[sub] = [item]
                    else:
                        pending.append(item)
                delivered += len(subs)
            if waiters:
                waiter = waiters.pop(pid, None)
                if waiter is not None:
                    waiter.set()
        self.stats.deliveries += delivered
        if is_member_event and membership in ("leave", "ban"):
            self._leave(event.room_id, str(target))

    def _remember(self, event_id: str, payload: bytes) -> None:
        recent = self._recent
        recent[event_id] = payload
        if len(recent) > RECENT_ENCODED:
            del recent[next(iter(recent))]

    def send_ephemeral(self, participant_ids: Iterable[str], payload: dict[str, object]) -> int:
        """Encode once, deliver to every connection of the given participants."""
        frame = self._encode(orjson.dumps(payload))
        count = 0
        for pid in participant_ids:
            for sub in tuple(self._subs.get(pid, ())):
                sub.deliver_ephemeral(frame)
                count += 1
        self.stats.ephemeral_deliveries += count
        return count

    def send_ephemeral_batch(
        self, participant_ids: Iterable[str], payloads: Sequence[dict[str, object]]
    ) -> int:
        """Encode each payload once; every connection gets them all in one hand-over."""
        if not payloads:
            return 0
        blob = b"".join(self._encode(orjson.dumps(p)) for p in payloads)
        count = 0
        for pid in participant_ids:
            for sub in tuple(self._subs.get(pid, ())):
                sub.deliver_ephemeral(blob)
                count += 1
        self.stats.ephemeral_deliveries += count * len(payloads)
        return count

    # -- long-poll ----------------------------------------------------------

    def waiter(self, participant_id: str) -> trio.Event:
        """An event set when something is next published to one of the participant's rooms.

        Take it *before* reading the database, then wait on it: a publish that
        lands between the read and the wait still wakes the waiter.
        """
        waiter = self._waiters.get(participant_id)
        if waiter is None:
            waiter = self._waiters[participant_id] = trio.Event()
        return waiter

    def drop_waiter(self, participant_id: str, waiter: trio.Event) -> None:
        """Forget a long-poll waiter that timed out, unless another poll still waits on it."""
        if self._waiters.get(participant_id) is waiter and not waiter.statistics().tasks_waiting:
            del self._waiters[participant_id]

    def statistics(self) -> dict[str, int]:
        return {
            "events": self.stats.events,
            "deliveries": self.stats.deliveries,
            "ephemeral_deliveries": self.stats.ephemeral_deliveries,
            "slow_consumers": self.stats.slow_consumers,
            "connections": self.connection_count(),
            "rooms": len(self._members),
        }
