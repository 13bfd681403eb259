"""The room event: one node of a room's append-only DAG.

Rules
-----
1. An event is immutable once stored, with one exception: a redaction erases
   its ``content`` (and the content of its edits). Its id, sender, room,
   positions and its place in the hash chain stay.
2. ``event_id`` is the hash of the redacted form (:func:`hashed_form`), so it
   survives redaction and any tampering with a stored field changes it.
3. Each room's events form a chain: ``prev_event_ids`` names the room's
   previous event (a single-server room has one forward extremity) and
   ``depth`` is its depth plus one. The first event has depth 1 and no parents.
4. ``stream_position`` is server-wide and strictly increasing; it is assigned
   in the transaction that stores the event and is not part of the hash
   (it orders delivery, it does not identify).

Wire shape (CONTRACT section 4): :func:`wire_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol.canonical import JsonObject, content_hash, event_id_for
from protocol.timefmt import iso_ms, iso_or_none


class EventType(StrEnum):
    CREATE = "swp.room.create"
    MESSAGE = "swp.room.message"
    EDIT = "swp.room.edit"  # stored only; goes on the wire as swp.room.message
    REDACTION = "swp.room.redaction"
    REACTION = "swp.room.reaction"
    MEMBER = "swp.room.member"
    NAME = "swp.room.name"
    TOPIC = "swp.room.topic"
    POWER_LEVELS = "swp.room.power_levels"
    ROOM_STATE = "swp.room.state"  # closed / archived / reopened


MAX_PREV_EVENTS = 20


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a service asks to append; storage fills in chain and position."""

    room_id: str
    type: EventType
    sender_id: str
    actor_id: str
    content: JsonObject
    relates_to: str | None = None
    event_uuid: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.content, dict):
            raise TypeError("event content must be a JSON object")


@dataclass(frozen=True, slots=True)
class Event:
    stream_position: int
    event_id: str
    room_id: str
    type: EventType
    sender_id: str
    actor_id: str
    content: JsonObject
    origin_ts_ms: int
    depth: int
    prev_event_ids: tuple[str, ...]
    content_hash: str
    relates_to: str | None = None
    # Read-model fields, filled in when the event is read back.
    redacted_at_ms: int | None = None
    redacted_by: str | None = None
    redaction_reason: str | None = None
    edited_at_ms: int | None = None
    original_content: JsonObject | None = None
    extra: JsonObject = field(default_factory=dict)

    @property
    def is_redacted(self) -> bool:
        return self.redacted_at_ms is not None


def hashed_form(
    *,
    room_id: str,
    event_type: str,
    sender_id: str,
    actor_id: str,
    origin_ts_ms: int,
    depth: int,
    prev_event_ids: tuple[str, ...] | list[str],
    content_hash: str,
    relates_to: str | None,
) -> JsonObject:
    """The redacted canonical form that the event id is the hash of."""
    form: JsonObject = {
        "room_id": room_id,
        "type": event_type,
        "sender_id": sender_id,
        "actor_id": actor_id,
        "origin_ts_ms": origin_ts_ms,
        "depth": depth,
        "prev_event_ids": list(prev_event_ids),
        "content_hash": content_hash,
    }
    if relates_to is not None:
        form["relates_to"] = relates_to
    return form


def build_event(
    draft: EventDraft,
    *,
    stream_position: int,
    origin_ts_ms: int,
    prev_event_ids: tuple[str, ...],
    prev_depth: int,
) -> Event:
    """Seal a draft into an event: chain it, hash it, position it."""
    if len(prev_event_ids) > MAX_PREV_EVENTS:
        raise ValueError("too many prev_event_ids")
    chash = content_hash(draft.content)
    depth = prev_depth + 1
    eid = event_id_for(
        hashed_form(
            room_id=draft.room_id,
            event_type=draft.type,
            sender_id=draft.sender_id,
            actor_id=draft.actor_id,
            origin_ts_ms=origin_ts_ms,
            depth=depth,
            prev_event_ids=prev_event_ids,
            content_hash=chash,
            relates_to=draft.relates_to,
        )
    )
    return Event(
        stream_position=stream_position,
        event_id=eid,
        room_id=draft.room_id,
        type=draft.type,
        sender_id=draft.sender_id,
        actor_id=draft.actor_id,
        content=draft.content,
        origin_ts_ms=origin_ts_ms,
        depth=depth,
        prev_event_ids=prev_event_ids,
        content_hash=chash,
        relates_to=draft.relates_to,
    )


def verify_event_id(event: Event) -> bool:
    """True when the stored fields still hash to the event's id."""
    return (
        event_id_for(
            hashed_form(
                room_id=event.room_id,
                event_type=event.type,
                sender_id=event.sender_id,
                actor_id=event.actor_id,
                origin_ts_ms=event.origin_ts_ms,
                depth=event.depth,
                prev_event_ids=event.prev_event_ids,
                content_hash=event.content_hash,
                relates_to=event.relates_to,
            )
        )
        == event.event_id
    )


def wire_event(event: Event, tenant_id: str) -> dict[str, Any]:
    """The event as clients see it on the stream, in /sync and in history."""
    wire_type = EventType.MESSAGE if event.type is EventType.EDIT else event.type
    ts = iso_ms(event.origin_ts_ms)
    frame: dict[str, Any] = {
        "type": str(wire_type),
        "event_type": str(wire_type),
        "id": event.event_id,
        "room_id": event.room_id,
        "tenant_id": tenant_id,
        "sender_id": event.sender_id,
        "actor_id": event.actor_id,
        "content": event.content,
        "stream_position": event.stream_position,
        "origin_ts": event.origin_ts_ms // 1000,
        "ts": ts,
        "created_at": ts,
        "depth": event.depth,
        "prev_event_ids": list(event.prev_event_ids),
        "edited_at": iso_or_none(event.edited_at_ms),
        "redacted_at": iso_or_none(event.redacted_at_ms),
    }
    if event.original_content is not None:
        frame["original_content"] = event.original_content
    if event.is_redacted:
        frame["redacted_by"] = event.redacted_by
        frame["reason"] = event.redaction_reason
    if event.extra:
        frame.update(event.extra)
    return frame
