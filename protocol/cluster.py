"""The cluster bus, sans-I/O: message codecs and the feed's gap/duplicate rule.

Every process of a cluster feeds its hub from one ordered log (the database);
the bus (Redis pub/sub, at most once) is only the doorbell. Positions are
gapless and appear in commit order (``stream_head``), so a receiver can always
tell "missing" from "not committed yet": anything at or below the head is
committed.

Feed rule (:class:`FeedCursor`)
-------------------------------
A batch announces ``(prev, last]``: the positions it carries.

1. ``last <= applied``: drop it (a duplicate, or late).
2. ``prev > applied``: a gap. Read ``(applied, prev]`` from the database,
   apply it, then apply the batch.
3. Positions-only batches (big commits) and head checks read
   ``(applied, last]``.
4. Events at or below ``applied`` are skipped; a hole inside what was handed
   over stops the run there (the rest is read again later), so the hub sees
   every position exactly once, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from protocol.events import Event, EventType

__all__ = [
    "Batch",
    "BusMessageError",
    "FeedCursor",
    "Plan",
    "decode_batch",
    "decode_object",
    "encode_batch",
    "encode_object",
    "event_from_json",
    "event_to_json",
]

MAX_FRAMES = 64  # bigger batches go out as positions only
MAX_FRAME_BYTES = 256 * 1024  # and so does a batch whose events encode larger


class BusMessageError(ValueError):
    """A bus message that does not decode (a foreign publisher, a bug)."""


def event_to_json(event: Event) -> dict[str, Any]:
    """Every field of a committed (presented) event: what the hub needs to fan it out."""
    return {
        "stream_position": event.stream_position,
        "event_id": event.event_id,
        "room_id": event.room_id,
        "type": str(event.type),
        "sender_id": event.sender_id,
        "actor_id": event.actor_id,
        "content": event.content,
        "origin_ts_ms": event.origin_ts_ms,
        "depth": event.depth,
        "prev_event_ids": list(event.prev_event_ids),
        "content_hash": event.content_hash,
        "relates_to": event.relates_to,
        "redacted_at_ms": event.redacted_at_ms,
        "redacted_by": event.redacted_by,
        "redaction_reason": event.redaction_reason,
        "edited_at_ms": event.edited_at_ms,
        "original_content": event.original_content,
        "extra": event.extra,
    }


def event_from_json(raw: object) -> Event:
    if not isinstance(raw, dict):
        raise BusMessageError("event: must be an object")
    try:
        return Event(
            stream_position=_int(raw["stream_position"]),
            event_id=str(raw["event_id"]),
            room_id=str(raw["room_id"]),
            type=EventType(raw["type"]),
            sender_id=str(raw["sender_id"]),
            actor_id=str(raw["actor_id"]),
            content=_obj(raw["content"]),
            origin_ts_ms=_int(raw["origin_ts_ms"]),
            depth=_int(raw["depth"]),
            prev_event_ids=tuple(str(p) for p in raw["prev_event_ids"]),
            content_hash=str(raw["content_hash"]),
            relates_to=_opt_str(raw.get("relates_to")),
            redacted_at_ms=_opt_int(raw.get("redacted_at_ms")),
            redacted_by=_opt_str(raw.get("redacted_by")),
            redaction_reason=_opt_str(raw.get("redaction_reason")),
            edited_at_ms=_opt_int(raw.get("edited_at_ms")),
            original_content=None
            if raw.get("original_content") is None
            else _obj(raw["original_content"]),
            extra=_obj(raw.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BusMessageError(f"event: {exc}") from None


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BusMessageError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _obj(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BusMessageError("expected an object")
    return value


@dataclass(frozen=True, slots=True)
class Batch:
    """One commit as announced on the bus: positions ``(prev, last]``.

    ``events`` is ``None`` for a positions-only batch (the receiver reads the
    rows from the database).
    """

    node: str
    prev: int
    last: int
    events: tuple[Event, ...] | None

    @classmethod
    def of(cls, node: str, events: Sequence[Event]) -> Batch:
        """The announcement of a commit (``events`` ascending, contiguous)."""
        first, last = events[0].stream_position, events[-1].stream_position
        return cls(node, first - 1, last, tuple(events))


def encode_batch(batch: Batch) -> bytes:
    """The bus message; big batches (many events or many bytes) go positions-only."""
    head = {"node": batch.node, "prev": batch.prev, "last": batch.last}
    if batch.events is not None and len(batch.events) <= MAX_FRAMES:
        data = orjson.dumps({**head, "events": [event_to_json(e) for e in batch.events]})
        if len(data) <= MAX_FRAME_BYTES:
            return data
    return orjson.dumps({**head, "events": None})


def decode_batch(data: bytes) -> Batch:
    raw = decode_object(data)
    prev, last = _int(raw.get("prev")), _int(raw.get("last"))
    if not 0 <= prev < last:
        raise BusMessageError(f"batch: need 0 <= prev < last, got ({prev}, {last}]")
    events_raw = raw.get("events")
    events: tuple[Event, ...] | None = None
    if events_raw is not None:
        if not isinstance(events_raw, list):
            raise BusMessageError("batch: events must be a list or null")
        events = tuple(event_from_json(e) for e in events_raw)
        expected = list(range(prev + 1, last + 1))
        if [e.stream_position for e in events] != expected:
            raise BusMessageError("batch: events must be the positions (prev, last] in order")
    return Batch(str(raw.get("node", "")), prev, last, events)


def encode_object(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def decode_object(data: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BusMessageError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BusMessageError("a bus message is a JSON object")
    return raw


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a batch: read ``(read_after, read_upto]`` first (when
    ``read_upto > read_after``), then apply ``events``."""

    read_after: int
    read_upto: int
    events: tuple[Event, ...] = ()

    @property
    def reads(self) -> bool:
        return self.read_upto > self.read_after


class FeedCursor:
    """``applied``: everything up to here has been handed to the hub, once, in order."""

    def __init__(self, applied: int) -> None:
        self.applied = applied

    def plan(self, batch: Batch) -> Plan | None:
        """``None``: drop the batch (rule 1); otherwise what to read and apply."""
        applied = self.applied
        if batch.last <= applied:
            return None
        if batch.events is None:
            return Plan(applied, batch.last)
        if batch.prev > applied:
            return Plan(applied, batch.prev, batch.events)
        return Plan(applied, applied, batch.events)

    def plan_head(self, head: int) -> Plan | None:
        """The committed head is ``head``: what is missing below it (rule 3)."""
        return Plan(self.applied, head) if head > self.applied else None

    def take(self, events: Iterable[Event]) -> list[Event]:
        """The events to hand to the hub now (rule 4); advances ``applied``."""
        run: list[Event] = []
        applied = self.applied
        for event in events:
            position = event.stream_position
            if position <= applied:
                continue
            if position != applied + 1:
                break
            run.append(event)
            applied = position
        self.applied = applied
        return run
