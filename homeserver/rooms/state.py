"""The room state snapshot (seed 004) and the settings it shows.

``snapshot`` reads everything in one read transaction with a fixed number of
indexed queries (no per-member query), then adds presence and typing from
memory.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from typing import Any

from homeserver.clock import WallClock
from homeserver.live.ephemeral import PresenceService
from homeserver.rooms.service import joined_member, thresholds_of, writer_member
from homeserver.store.database import Readers, Writer
from protocol import ids, power
from protocol.ai import default_mode
from protocol.errors import ApiError, ErrorCode
from storage import events as event_store
from storage import relations
from storage import rooms as room_store
from storage import roomstate as store
from storage.rooms import Room
from storage.roomstate import Engagement, MemberRow, Snooze

NOTIFICATION_MODES = ("all", "mentions", "none", "inherit")
ENGAGEMENT_MODES = ("always", "mention", "keyword", "autonomous")
# "default" clears the stored mode: the room then follows the contract default
# (protocol.ai.default_mode: ``always`` in a DM with an AI, ``mention`` elsewhere).
ENGAGEMENT_ALIASES: dict[str, str | None] = {"engage": "always", "default": None}
RESPONSE_MODES = ("streaming", "conversational")
DEFAULT_RESPONSE_MODE = "conversational"


@dataclass(frozen=True, slots=True)
class Snapshot:
    room: Room
    members: list[MemberRow]
    engagement: list[Engagement]
    unread_count: int
    last_read_event_id: str | None
    muted_until_ms: int | None
    snoozed_event_ids: list[str]
    presence: dict[str, str]
    default_mode: str = "mention"


@dataclass(frozen=True, slots=True)
class EngagementView:
    rows: list[Engagement]
    default_mode: str


def room_default_mode(conn: sqlite3.Connection, room_id: str) -> str:
    room = room_store.get_room(conn, room_id, count_members=False)
    if room is None or room.room_type != "dm":
        return "mention"
    members = [m.participant_id for m in room_store.list_members(conn, room_id)]
    return default_mode(room.room_type, members)


def engagement_json(rows: list[Engagement], default: str) -> dict[str, Any]:
    room_wide = next((e for e in rows if e.participant_id == ""), None)
    overrides = {
        e.participant_id: {"mode": e.mode, "response_mode": e.response_mode}
        for e in rows
        if e.participant_id
    }
    return {
        "mode": (room_wide.mode if room_wide and room_wide.mode else default),
        "response_mode": (
            room_wide.response_mode
            if room_wide and room_wide.response_mode
            else DEFAULT_RESPONSE_MODE
        ),
        "overrides": overrides,
    }


class RoomStateService:
    def __init__(
        self, writer: Writer, readers: Readers, presence: PresenceService, clock: WallClock
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._presence = presence
        self._clock = clock

    async def snapshot(self, caller: str, room_id: str) -> Snapshot:
        now = self._clock()

        def read(conn: sqlite3.Connection) -> Snapshot:
            joined_member(conn, room_id, caller)
            room = room_store.get_room(conn, room_id)
            assert room is not None
            members = store.members_with_settings(conn, room_id)
            marker = relations.get_read_marker(conn, room_id, caller)
            _, muted = store.member_setting(conn, room_id, caller)
            return Snapshot(
                room=room,
                members=members,
                engagement=store.engagement(conn, room_id),
                unread_count=relations.unread_count(conn, room_id, caller),
                last_read_event_id=marker.event_id if marker else None,
                muted_until_ms=muted if muted is not None and muted > now else None,
                snoozed_event_ids=[
                    s.event_id for s in store.active_snoozes(conn, caller, now, room_id)
                ],
                presence={},
                default_mode=default_mode(room.room_type, [m.participant_id for m in members]),
            )

        snap = await self._readers.read(read)
        presence = {
            m.participant_id: self._presence.seen_by(caller, m.participant_id, m.participant_type)
            for m in snap.members
        }
        return dataclasses.replace(snap, presence=presence)

    async def set_notification_mode(self, caller: str, room_id: str, mode: str) -> None:
        if mode not in NOTIFICATION_MODES:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM, "mode: must be one of " + ", ".join(NOTIFICATION_MODES)
            )

        def txn(conn: sqlite3.Connection) -> None:
            joined_member(conn, room_id, caller)
            store.set_notification_mode_txn(conn, room_id, caller, mode)

        await self._writer.write(txn)

    async def mute(self, caller: str, room_id: str, until_ms: int | None) -> None:
        if until_ms is not None and until_ms <= self._clock():
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "until: must be in the future (or null)")

        def txn(conn: sqlite3.Connection) -> None:
            joined_member(conn, room_id, caller)
            store.set_muted_until_txn(conn, room_id, caller, until_ms)

        await self._writer.write(txn)

    async def snooze(self, caller: str, event_id: str, until_ms: int) -> Snooze:
        now = self._clock()
        if until_ms <= now:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "until: must be in the future")

        def txn(conn: sqlite3.Connection) -> Snooze:
            event = event_store.get_event(conn, event_id)
            if event is None:
                raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "no such message")
            member = room_store.get_membership(conn, event.room_id, caller)
            if member is None or member.membership != "join":
                # Do not reveal that the event exists to a non-member.
                raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "no such message")
            return store.add_snooze_txn(
                conn,
                Snooze(
                    ids.random_id("snz_"),
                    caller,
                    event.room_id,
                    event.event_id,
                    until_ms,
                    now,
                ),
            )

        return await self._writer.write(txn)

    async def snoozes(self, caller: str) -> list[Snooze]:
        now = self._clock()
        return await self._readers.read(lambda conn: store.active_snoozes(conn, caller, now))

    async def unsnooze(self, caller: str, snooze_id: str) -> None:
        if not await self._writer.write(store.delete_snooze_txn, caller, snooze_id):
            raise ApiError(ErrorCode.SW_NOT_FOUND, "no such snooze")

    async def engagement(self, caller: str, room_id: str) -> EngagementView:
        def read(conn: sqlite3.Connection) -> EngagementView:
            joined_member(conn, room_id, caller)
            return EngagementView(store.engagement(conn, room_id), room_default_mode(conn, room_id))

        return await self._readers.read(read)

    async def set_engagement(
        self, caller: str, room_id: str, column: str, value: str, ai_id: str | None
    ) -> EngagementView:
        stored: str | None = value
        if column == "mode":
            stored = ENGAGEMENT_ALIASES.get(value, value)
            allowed: tuple[str, ...] = ENGAGEMENT_MODES
        else:
            allowed = RESPONSE_MODES
        if stored is not None and stored not in allowed:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "mode: must be one of " + ", ".join(allowed))
        now = self._clock()

        def txn(conn: sqlite3.Connection) -> EngagementView:
            room, actor = writer_member(conn, room_id, caller)
            power.check_can_send(actor.power_level, actor.read_only, thresholds_of(room))
            if ai_id is not None:
                target = room_store.get_membership(conn, room_id, ai_id)
                if target is None or target.membership != "join":
                    raise ApiError(
                        ErrorCode.SW_PARTICIPANT_NOT_FOUND,
                        "participant_id: not a member of this room",
                    )
            store.set_engagement_txn(
                conn,
                room_id=room_id,
                participant_id=ai_id or "",
                column=column,
                value=stored,
                updated_by=caller,
                now_ms=now,
            )
            return EngagementView(store.engagement(conn, room_id), room_default_mode(conn, room_id))

        return await self._writer.write(txn)
