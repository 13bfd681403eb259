"""Edits, redactions, reactions and read markers (CONTRACT section 7).

Rules
-----
Edit:    the sender (or the actor of an on-behalf message) only, within the
         edit window (409 SW_EVENT_TOO_OLD_TO_EDIT); each edit is its own
         event; ``original_content`` is the first content, forever.
Redact:  own events always, others' with power >= redact_other (403
         SW_REDACT_FORBIDDEN); the redaction is an event; the message's and
         its edits' content is erased; a second redaction is a 200 no-op.
React:   one per (sender, event, emoji); adding twice is a no-op, removing
         a reaction that is not there is a no-op.
Marker:  only moves forward; the reader's own connections hear of it.
Edits, redactions and reactions do not count toward the message rate limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeserver.clock import WallClock
from homeserver.live.hub import Hub
from homeserver.rooms.service import joined_member, thresholds_of, writer_member
from homeserver.store.database import Readers, Writer
from protocol import power
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, EventDraft, EventType
from protocol.validation import validate_content
from storage import events as event_store
from storage import relations

MAX_EMOJI = 64


@dataclass(frozen=True, slots=True)
class MarkerResult:
    event_id: str
    unread_count: int
    moved: bool


def _message_in_room(conn: sqlite3.Connection, room_id: str, event_id: str) -> Event:
    event = event_store.get_event(conn, event_id)
    if event is None or event.room_id != room_id or event.type is not EventType.MESSAGE:
        raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "no such message in this room")
    return event


def check_emoji(emoji: str) -> str:
    if not emoji or len(emoji) > MAX_EMOJI or any(ch.isspace() for ch in emoji):
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM,
            f"emoji: must be 1 to {MAX_EMOJI} characters without white space",
        )
    return emoji


class RelationService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        hub: Hub,
        clock: WallClock,
        *,
        tenant_id: str,
        max_content_bytes: int,
        edit_window_ms: int,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._hub = hub
        self._clock = clock
        self._tenant_id = tenant_id
        self._max_content = max_content_bytes
        self._edit_window_ms = edit_window_ms
        # Called after a redaction commits, to scrub erased text from the WAL.
        self.on_redacted: Callable[[], None] = lambda: None

    # -- edit ---------------------------------------------------------------

    async def edit(self, caller: str, room_id: str, event_id: str, content: Any) -> Event:
        checked = validate_content(content, max_bytes=self._max_content)
        return await self._writer.write(
            self._edit_txn, caller, room_id, event_id, checked, self._clock()
        )

    def _edit_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        event_id: str,
        content: dict[str, Any],
        now: int,
    ) -> Event:
        writer_member(conn, room_id, caller)
        target = _message_in_room(conn, room_id, event_id)
        if target.is_redacted:
            raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "that message was redacted")
        if caller not in (target.sender_id, target.actor_id):
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "you can only edit your own messages")
        if now - target.origin_ts_ms > self._edit_window_ms:
            raise ApiError(
                ErrorCode.SW_EVENT_TOO_OLD_TO_EDIT,
                f"messages can be edited for {self._edit_window_ms // 1000} s after sending",
            )
        event_store.append_event_txn(
            conn,
            EventDraft(
                room_id,
                EventType.EDIT,
                target.sender_id,
                caller,
                content,
                relates_to=target.event_id,
            ),
            now_ms=now,
        )
        found = event_store.get_event(conn, target.event_id)
        assert found is not None
        return found

    # -- redact -------------------------------------------------------------

    async def redact(self, caller: str, room_id: str, event_id: str, reason: str | None) -> Event:
        event = await self._writer.write(
            self._redact_txn, caller, room_id, event_id, reason, self._clock()
        )
        self.on_redacted()
        return event

    def _redact_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        event_id: str,
        reason: str | None,
        now: int,
    ) -> Event:
        room, actor = writer_member(conn, room_id, caller)
        target = _message_in_room(conn, room_id, event_id)
        power.check_redact(
            caller, target.sender_id, target.actor_id, actor.power_level, thresholds_of(room)
        )
        if target.is_redacted:
            return target
        content: dict[str, Any] = {"event_id": event_id, "redacted_by": caller, "reason": reason}
        event_store.append_event_txn(
            conn,
            EventDraft(room_id, EventType.REDACTION, caller, caller, content, relates_to=event_id),
            now_ms=now,
        )
        event_store.redact_txn(
            conn, target_event_id=event_id, redacted_by=caller, reason=reason, now_ms=now
        )
        found = event_store.get_event(conn, event_id)
        assert found is not None
        return found

    # -- reactions ----------------------------------------------------------

    async def react(
        self, caller: str, room_id: str, event_id: str, emoji: str, add: bool
    ) -> dict[str, Any]:
        check_emoji(emoji)
        return await self._writer.write(
            self._react_txn, caller, room_id, event_id, emoji, add, self._clock()
        )

    def _react_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        event_id: str,
        emoji: str,
        add: bool,
        now: int,
    ) -> dict[str, Any]:
        room, actor = writer_member(conn, room_id, caller)
        power.check_can_send(actor.power_level, actor.read_only, thresholds_of(room))
        target = _message_in_room(conn, room_id, event_id)
        if target.is_redacted:
            raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "that message was redacted")
        present = relations.reaction_exists(conn, event_id, caller, emoji)
        changed = present != add
        if changed:
            action = "add" if add else "remove"
            reaction = event_store.append_event_txn(
                conn,
                EventDraft(
                    room_id,
                    EventType.REACTION,
                    caller,
                    caller,
                    {"event_id": event_id, "emoji": emoji, "action": action},
                    relates_to=event_id,
                ),
                now_ms=now,
            )
            if add:
                relations.add_reaction_txn(
                    conn,
                    target=event_id,
                    sender_id=caller,
                    emoji=emoji,
                    room_id=room_id,
                    event_id=reaction.event_id,
                    now_ms=now,
                )
            else:
                relations.remove_reaction_txn(conn, event_id, caller, emoji)
        return {
            "event_id": event_id,
            "emoji": emoji,
            "sender_id": caller,
            "action": "add" if add else "remove",
            "changed": changed,
            "reactions": relations.reaction_summary(conn, event_id),
        }

    # -- read markers -------------------------------------------------------

    async def set_read_marker(self, caller: str, room_id: str, event_id: str) -> MarkerResult:
        result = await self._writer.write(
            self._marker_txn, caller, room_id, event_id, self._clock()
        )
        self._hub.send_ephemeral(
            [caller],
            {
                "type": "swp.room.read_marker",
                "room_id": room_id,
                "tenant_id": self._tenant_id,
                "participant_id": caller,
                "event_id": result.event_id,
                "unread_count": result.unread_count,
            },
        )
        return result

    def _marker_txn(
        self, conn: sqlite3.Connection, caller: str, room_id: str, event_id: str, now: int
    ) -> MarkerResult:
        joined_member(conn, room_id, caller)
        event = event_store.get_event(conn, event_id)
        if event is None or event.room_id != room_id:
            raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "no such event in this room")
        # An edit is read as its message; the marker sits at the message's position.
        # (get_event presents an edit with its message's id but its own position.)
        if event.type is EventType.EDIT:
            event = _message_in_room(conn, room_id, event.event_id)
        moved = relations.set_read_marker_txn(
            conn,
            room_id=room_id,
            participant_id=caller,
            event_id=event.event_id,
            position=event.stream_position,
            now_ms=now,
        )
        marker = relations.get_read_marker(conn, room_id, caller)
        assert marker is not None
        return MarkerResult(marker.event_id, relations.unread_count(conn, room_id, caller), moved)

    async def unread(self, caller: str, room_id: str) -> tuple[int, str | None]:
        def read(conn: sqlite3.Connection) -> tuple[int, str | None]:
            joined_member(conn, room_id, caller)
            marker = relations.get_read_marker(conn, room_id, caller)
            return (
                relations.unread_count(conn, room_id, caller),
                marker.event_id if marker else None,
            )

        return await self._readers.read(read)
