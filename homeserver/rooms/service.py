"""Rooms: creation, lifecycle, membership and power (CONTRACT section 6).

Every rule is checked inside the writer transaction that applies it, so two
concurrent requests can never both pass a check that only one may pass.
Checks raise ScaiWave codes; ScaiGrid routes translate them at the boundary.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from typing import Any

from homeserver.clock import WallClock
from homeserver.store.database import Readers, Writer
from protocol import ids, power
from protocol.errors import ApiError, ErrorCode, invalid
from protocol.events import EventDraft, EventType
from protocol.power import PowerThresholds
from storage import events as event_store
from storage import participants as pstore
from storage import rooms as room_store
from storage.errors import Conflict
from storage.rooms import Membership, Room

ROOM_TYPES = frozenset({"group", "public", "dm", "incognito", "sidekick", "bridge"})
MAX_NAME = 255
MAX_TOPIC = 4096


@dataclass(frozen=True, slots=True)
class NewMember:
    participant_id: str
    role: str = "member"


@dataclass(frozen=True, slots=True)
class RoomSpec:
    room_type: str
    name: str | None
    topic: str | None
    is_public: bool
    members: tuple[NewMember, ...] = ()


def _room_or_404(conn: sqlite3.Connection, room_id: str, *, count_members: bool = True) -> Room:
    room = room_store.get_room(conn, room_id, count_members=count_members)
    if room is None:
        raise ApiError(ErrorCode.SW_ROOM_NOT_FOUND, f"no room {room_id[:80]!r}")
    return room


def _joined(member: Membership | None) -> Membership:
    if member is None or member.membership != "join":
        raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")
    return member


def _open(room: Room) -> Room:
    if room.state != "open":
        raise ApiError(ErrorCode.SW_ROOM_FROZEN, f"the room is {room.state}; it takes no writes")
    return room


def joined_member(conn: sqlite3.Connection, room_id: str, participant_id: str) -> Membership:
    """The caller's membership, or 403 SW_NOT_MEMBER (no room content in the error)."""
    _room_or_404(conn, room_id, count_members=False)
    return _joined(room_store.get_membership(conn, room_id, participant_id))


def writable_room(conn: sqlite3.Connection, room_id: str) -> Room:
    """The room, if it takes writes (its ``member_count`` is not filled in)."""
    return _open(_room_or_404(conn, room_id, count_members=False))


def writable_member(
    conn: sqlite3.Connection, room_id: str, participant_id: str
) -> tuple[Room, Membership]:
    """The room and the caller's membership, for a write.

    Membership is checked first: a non-member gets 403 SW_NOT_MEMBER and learns
    nothing, not even whether the room is closed or archived (409 SW_ROOM_FROZEN
    is for members).
    """
    room = _room_or_404(conn, room_id, count_members=False)
    member = _joined(room_store.get_membership(conn, room_id, participant_id))
    return _open(room), member


def not_read_only(member: Membership) -> Membership:
    """Refuse a write by a read-only member (a ScaiGrid ``viewer``): 403."""
    if member.read_only:
        raise ApiError(
            ErrorCode.SW_ROOM_FORBIDDEN, "viewers are read-only: this needs the member role"
        )
    return member


def writer_member(
    conn: sqlite3.Connection, room_id: str, participant_id: str
) -> tuple[Room, Membership]:
    """:func:`writable_member`, and the caller may write (is not a viewer).

    Every write to a room goes through this, or checks ``read_only`` itself
    (``power.check_can_send``). A viewer keeps what only concerns themself:
    leaving, their read marker, mute, notification mode, snoozes.
    """
    room, member = writable_member(conn, room_id, participant_id)
    return room, not_read_only(member)


def thresholds_of(room: Room) -> PowerThresholds:
    return _thresholds(tuple(sorted(room.thresholds.items())))


@functools.lru_cache(maxsize=256)
def _thresholds(items: tuple[tuple[str, int], ...]) -> PowerThresholds:
    return PowerThresholds.from_dict(dict(items))


def _participant_or_404(conn: sqlite3.Connection, participant_id: str) -> None:
    if pstore.get_participant(conn, participant_id) is None:
        raise ApiError(
            ErrorCode.SW_PARTICIPANT_NOT_FOUND, f"no participant {participant_id[:80]!r}"
        )


def change_membership_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    target: str,
    membership: str,
    actor: str,
    now_ms: int,
    power_level: int | None = None,
    read_only: bool | None = None,
    reason: str | None = None,
    visible_from: int | None = None,
) -> None:
    """Append the member event, then record the membership at its position.

    ``visible_from`` lets a room's founding members see the events before
    their join event (the room's creation).
    """
    content: dict[str, Any] = {
        "participant_id": target,
        "membership": membership,
        "changed_by": actor,
    }
    if power_level is not None:
        content["power_level"] = power_level
    if reason:
        content["reason"] = reason
    event = event_store.append_event_txn(
        conn,
        EventDraft(room_id, EventType.MEMBER, actor, actor, content),
        now_ms=now_ms,
    )
    room_store.set_membership_txn(
        conn,
        room_id=room_id,
        participant_id=target,
        membership=membership,
        changed_by=actor,
        now_ms=now_ms,
        position=visible_from if visible_from is not None else event.stream_position,
        power_level=power_level,
        read_only=read_only,
    )


def _role_power(role: str) -> tuple[int, bool]:
    if role not in power.ROLE_POWER:
        raise ApiError(ErrorCode.SW_INVALID_PARAM, "role: must be one of owner, member, viewer")
    return power.ROLE_POWER[role], role == "viewer"


def create_room_txn(
    conn: sqlite3.Connection,
    creator: str,
    spec: RoomSpec,
    now_ms: int,
    max_members: int,
    dm_key: str | None = None,
) -> Room:
    room_id = ids.random_id(ids.ROOM)
    if len(spec.members) + 1 > max_members:
        raise ApiError(ErrorCode.SW_INVALID_PARAM, f"initial_members: at most {max_members - 1}")
    for member in spec.members:
        _participant_or_404(conn, member.participant_id)
    room_store.create_room_txn(
        conn,
        room_id=room_id,
        room_type=spec.room_type,
        name=spec.name,
        topic=spec.topic,
        is_public=spec.is_public,
        creator_id=creator,
        thresholds=PowerThresholds().to_dict(),
        now_ms=now_ms,
        dm_key=dm_key,
    )
    create = {
        "creator_id": creator,
        "room_type": spec.room_type,
        "name": spec.name,
        "topic": spec.topic,
        "is_public": spec.is_public,
        "power_levels": PowerThresholds().to_dict(),
    }
    created = event_store.append_event_txn(
        conn, EventDraft(room_id, EventType.CREATE, creator, creator, create), now_ms=now_ms
    )
    change_membership_txn(
        conn,
        room_id=room_id,
        target=creator,
        membership="join",
        actor=creator,
        now_ms=now_ms,
        power_level=100,
        read_only=False,
        visible_from=created.stream_position,
    )
    for member in spec.members:
        if member.participant_id == creator:
            continue
        level, read_only = _role_power(member.role)
        change_membership_txn(
            conn,
            room_id=room_id,
            target=member.participant_id,
            membership="join",
            actor=creator,
            now_ms=now_ms,
            power_level=level,
            read_only=read_only,
            visible_from=created.stream_position,
        )
    return _room_or_404(conn, room_id)


class RoomService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        *,
        max_members: int,
        max_rooms: int,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._max_members = max_members
        self._max_rooms = max_rooms

    # -- creation -----------------------------------------------------------

    async def create(self, creator: str, spec: RoomSpec) -> Room:
        if spec.room_type not in ROOM_TYPES:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM,
                "room_type: must be one of " + ", ".join(sorted(ROOM_TYPES)),
            )
        return await self._writer.write(self._create_txn, creator, spec, self._clock())

    def _create_txn(self, conn: sqlite3.Connection, creator: str, spec: RoomSpec, now: int) -> Room:
        if room_store.count_rooms_for(conn, creator) >= self._max_rooms:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM, f"you are in {self._max_rooms} rooms already"
            )
        return create_room_txn(conn, creator, spec, now, self._max_members)

    async def direct(self, caller: str, other: str) -> tuple[Room, bool]:
        """The open DM between two participants; (room, created)."""
        if other == caller:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "participant_id: cannot DM yourself")
        return await self._writer.write(self._direct_txn, caller, other, self._clock())

    def _direct_txn(
        self, conn: sqlite3.Connection, caller: str, other: str, now: int
    ) -> tuple[Room, bool]:
        _participant_or_404(conn, other)
        key = "|".join(sorted((caller, other)))
        existing = room_store.find_dm(conn, key)
        if existing is not None:
            return existing, False
        spec = RoomSpec("dm", None, None, False, (NewMember(other, "owner"),))
        try:
            return create_room_txn(conn, caller, spec, now, self._max_members, dm_key=key), True
        except Conflict:  # pragma: no cover - the writer serialises; kept for safety
            found = room_store.find_dm(conn, key)
            assert found is not None
            return found, False

    # -- reads --------------------------------------------------------------

    async def get(self, caller: str, room_id: str) -> tuple[Room, list[Membership]]:
        def read(conn: sqlite3.Connection) -> tuple[Room, list[Membership]]:
            joined_member(conn, room_id, caller)
            return _room_or_404(conn, room_id), room_store.list_members(conn, room_id)

        return await self._readers.read(read)

    async def members(self, caller: str, room_id: str) -> list[Membership]:
        def read(conn: sqlite3.Connection) -> list[Membership]:
            joined_member(conn, room_id, caller)
            return room_store.list_members(conn, room_id)

        return await self._readers.read(read)

    async def mine(self, caller: str, *, limit: int, after: str | None) -> list[Room]:
        return await self._readers.read(
            lambda conn: room_store.rooms_for(conn, caller, limit=limit, after=after)
        )

    async def directory(self, *, query: str | None, limit: int, after: str | None) -> list[Room]:
        return await self._readers.read(
            lambda conn: room_store.public_rooms(conn, query=query, limit=limit, after=after)
        )

    # -- lifecycle ----------------------------------------------------------

    async def join(self, caller: str, room_id: str) -> None:
        await self._writer.write(self._join_txn, caller, room_id, self._clock())

    def _join_txn(self, conn: sqlite3.Connection, caller: str, room_id: str, now: int) -> None:
        room = writable_room(conn, room_id)
        member = room_store.get_membership(conn, room_id, caller)
        state = member.membership if member is not None else None
        if state == "join":
            return
        if state == "ban":
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "you are banned from this room")
        if not (room.is_public or state == "invite"):
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "this room is invite-only")
        if room_store.count_members(conn, room_id) >= self._max_members:
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "the room is full")
        change_membership_txn(
            conn, room_id=room_id, target=caller, membership="join", actor=caller, now_ms=now
        )

    async def leave(self, caller: str, room_id: str) -> None:
        await self._writer.write(self._leave_txn, caller, room_id, self._clock())

    def _leave_txn(self, conn: sqlite3.Connection, caller: str, room_id: str, now: int) -> None:
        _room_or_404(conn, room_id)
        member = room_store.get_membership(conn, room_id, caller)
        if member is None or member.membership not in ("join", "invite"):
            raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")
        change_membership_txn(
            conn, room_id=room_id, target=caller, membership="leave", actor=caller, now_ms=now
        )

    async def invite(self, caller: str, room_id: str, target: str) -> None:
        await self._writer.write(self._invite_txn, caller, room_id, target, self._clock())

    def _invite_txn(
        self, conn: sqlite3.Connection, caller: str, room_id: str, target: str, now: int
    ) -> None:
        room, actor = writer_member(conn, room_id, caller)
        power.check_invite(actor.power_level, thresholds_of(room))
        _participant_or_404(conn, target)
        current = room_store.get_membership(conn, room_id, target)
        if current is not None and current.membership in ("join", "invite"):
            return
        if current is not None and current.membership == "ban":
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "that participant is banned; unban first")
        change_membership_txn(
            conn, room_id=room_id, target=target, membership="invite", actor=caller, now_ms=now
        )

    async def add_member(self, caller: str, room_id: str, target: str, role: str) -> Membership:
        """ScaiGrid: add a member directly (joined), with a role."""
        return await self._writer.write(
            self._add_member_txn, caller, room_id, target, role, self._clock()
        )

    def _add_member_txn(
        self, conn: sqlite3.Connection, caller: str, room_id: str, target: str, role: str, now: int
    ) -> Membership:
        room, actor = writer_member(conn, room_id, caller)
        level, read_only = _role_power(role)
        power.check_can_send(actor.power_level, actor.read_only, thresholds_of(room))
        power.check_invite(actor.power_level, thresholds_of(room))
        if level > actor.power_level:
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "cannot grant a role above your own")
        _participant_or_404(conn, target)
        current = room_store.get_membership(conn, room_id, target)
        if current is not None and current.membership == "ban":
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "that participant is banned; unban first")
        if current is None or current.membership != "join":
            if room_store.count_members(conn, room_id) >= self._max_members:
                raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "the room is full")
            change_membership_txn(
                conn,
                room_id=room_id,
                target=target,
                membership="join",
                actor=caller,
                now_ms=now,
                power_level=level,
                read_only=read_only,
            )
        found = room_store.get_membership(conn, room_id, target)
        assert found is not None
        return found

    async def kick(self, caller: str, room_id: str, target: str, reason: str | None) -> None:
        await self._writer.write(
            self._remove_txn, caller, room_id, target, reason, "leave", self._clock()
        )

    async def ban(self, caller: str, room_id: str, target: str, reason: str | None) -> None:
        await self._writer.write(
            self._remove_txn, caller, room_id, target, reason, "ban", self._clock()
        )

    def _remove_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        target: str,
        reason: str | None,
        outcome: str,
        now: int,
    ) -> None:
        room = _room_or_404(conn, room_id)
        actor = joined_member(conn, room_id, caller)
        current = room_store.get_membership(conn, room_id, target)
        thresholds = thresholds_of(room)
        if outcome == "leave" and target == caller:
            self._leave_txn(conn, caller, room_id, now)
            return
        not_read_only(actor)
        target_power = current.power_level if current is not None else 0
        if outcome == "ban":
            power.check_ban(actor.power_level, target_power, thresholds)
            _participant_or_404(conn, target)
            if current is not None and current.membership == "ban":
                return
        else:
            if current is None or current.membership not in ("join", "invite"):
                raise ApiError(
                    ErrorCode.SW_PARTICIPANT_NOT_FOUND, "that participant is not in this room"
                )
            power.check_kick(actor.power_level, target_power, thresholds)
        change_membership_txn(
            conn,
            room_id=room_id,
            target=target,
            membership=outcome,
            actor=caller,
            now_ms=now,
            reason=reason,
        )

    async def unban(self, caller: str, room_id: str, target: str) -> None:
        await self._writer.write(self._unban_txn, caller, room_id, target, self._clock())

    def _unban_txn(
        self, conn: sqlite3.Connection, caller: str, room_id: str, target: str, now: int
    ) -> None:
        room = _room_or_404(conn, room_id)
        actor = not_read_only(joined_member(conn, room_id, caller))
        power.check_unban(actor.power_level, thresholds_of(room))
        current = room_store.get_membership(conn, room_id, target)
        if current is None or current.membership != "ban":
            raise ApiError(ErrorCode.SW_PARTICIPANT_NOT_FOUND, "that participant is not banned")
        change_membership_txn(
            conn, room_id=room_id, target=target, membership="leave", actor=caller, now_ms=now
        )

    async def set_state(self, caller: str, room_id: str, state: str) -> Room:
        """Close (terminal) or archive (restorable) a room."""
        return await self._writer.write(self._state_txn, caller, room_id, state, self._clock())

    def _state_txn(
        self, conn: sqlite3.Connection, caller: str, room_id: str, state: str, now: int
    ) -> Room:
        room = _room_or_404(conn, room_id)
        actor = not_read_only(joined_member(conn, room_id, caller))
        power.check_close(actor.power_level, room.creator_id == caller, thresholds_of(room))
        if room.state == state:
            return room
        if room.state == "closed":
            raise ApiError(ErrorCode.SW_ROOM_FROZEN, "the room is closed for good")
        room_store.update_room_txn(conn, room_id, {"state": state}, now)
        event_store.append_event_txn(
            conn,
            EventDraft(room_id, EventType.ROOM_STATE, caller, caller, {"state": state}),
            now_ms=now,
        )
        return _room_or_404(conn, room_id)

    async def update(self, caller: str, room_id: str, changes: dict[str, Any]) -> Room:
        """Change name / topic / is_public, each as its own event."""
        return await self._writer.write(self._update_txn, caller, room_id, changes, self._clock())

    def _update_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        changes: dict[str, Any],
        now: int,
    ) -> Room:
        room, actor = writer_member(conn, room_id, caller)
        power.check_state_change(actor.power_level, thresholds_of(room))
        if "is_public" in changes and not isinstance(changes["is_public"], bool):
            raise invalid("is_public", "must be true or false")
        kinds = {"name": EventType.NAME, "topic": EventType.TOPIC}
        for key, value in changes.items():
            if getattr(room, key) == value:
                continue
            room_store.update_room_txn(conn, room_id, {key: value}, now)
            event_type = kinds.get(key, EventType.ROOM_STATE)
            event_store.append_event_txn(
                conn, EventDraft(room_id, event_type, caller, caller, {key: value}), now_ms=now
            )
        return _room_or_404(conn, room_id)

    async def set_power(self, caller: str, room_id: str, target: str, level: int) -> Membership:
        return await self._writer.write(
            self._power_txn, caller, room_id, target, level, self._clock()
        )

    def _power_txn(
        self,
        conn: sqlite3.Connection,
        caller: str,
        room_id: str,
        target: str,
        level: int,
        now: int,
    ) -> Membership:
        room, actor = writer_member(conn, room_id, caller)
        current = room_store.get_membership(conn, room_id, target)
        if current is None or current.membership != "join":
            raise ApiError(ErrorCode.SW_PARTICIPANT_NOT_FOUND, "that participant is not a member")
        power.check_set_power(
            caller, actor.power_level, target, current.power_level, level, thresholds_of(room)
        )
        room_store.set_power_txn(
            conn,
            room_id=room_id,
            participant_id=target,
            power_level=level,
            read_only=None,
            now_ms=now,
        )
        event_store.append_event_txn(
            conn,
            EventDraft(
                room_id,
                EventType.POWER_LEVELS,
                caller,
                caller,
                {
                    "participant_id": target,
                    "power_level": level,
                    "previous_power_level": current.power_level,
                    "changed_by": caller,
                },
            ),
            now_ms=now,
        )
        found = room_store.get_membership(conn, room_id, target)
        assert found is not None
        return found
