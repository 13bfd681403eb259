"""Rooms, memberships and the visibility spans that /sync and the stream use."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from storage.errors import Conflict


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    room_type: str
    name: str | None
    topic: str | None
    is_public: bool
    creator_id: str
    state: str
    thresholds: dict[str, int]
    created_at_ms: int
    updated_at_ms: int
    last_event_id: str | None
    last_depth: int
    member_count: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    room_id: str
    participant_id: str
    membership: str
    power_level: int
    read_only: bool
    changed_by: str | None
    joined_at_ms: int | None
    updated_at_ms: int


_ROOM_COLUMNS = (
    "r.room_id, r.room_type, r.name, r.topic, r.is_public, r.creator_id, r.state,"
    " r.thresholds, r.created_at_ms, r.updated_at_ms, r.last_event_id, r.last_depth,"
    " (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id"
    "  AND m.membership = 'join') AS member_count"
)


_ROOM_COLUMNS_NO_COUNT = _ROOM_COLUMNS.split(", (SELECT COUNT(*)")[0] + ", 0 AS member_count"


def _room(row: sqlite3.Row) -> Room:
    return Room(
        room_id=row["room_id"],
        room_type=row["room_type"],
        name=row["name"],
        topic=row["topic"],
        is_public=bool(row["is_public"]),
        creator_id=row["creator_id"],
        state=row["state"],
        thresholds=orjson.loads(row["thresholds"]),
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        last_event_id=row["last_event_id"],
        last_depth=row["last_depth"],
        member_count=row["member_count"],
    )


def _membership(row: sqlite3.Row) -> Membership:
    return Membership(
        room_id=row["room_id"],
        participant_id=row["participant_id"],
        membership=row["membership"],
        power_level=row["power_level"],
        read_only=bool(row["read_only"]),
        changed_by=row["changed_by"],
        joined_at_ms=row["joined_at_ms"],
        updated_at_ms=row["updated_at_ms"],
    )


def create_room_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    room_type: str,
    name: str | None,
    topic: str | None,
    is_public: bool,
    creator_id: str,
    thresholds: dict[str, int],
    now_ms: int,
    dm_key: str | None = None,
) -> None:
    try:
        conn.execute(
            "INSERT INTO rooms (room_id, room_type, name, topic, is_public, creator_id,"
            " thresholds, dm_key, created_at_ms, updated_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                room_id,
                room_type,
                name,
                topic,
                int(is_public),
                creator_id,
                orjson.dumps(thresholds).decode(),
                dm_key,
                now_ms,
                now_ms,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict("a direct room for this pair exists") from exc


def get_room(conn: sqlite3.Connection, room_id: str, *, count_members: bool = True) -> Room | None:
    """A room; ``count_members=False`` skips the member count (the hot write path)."""
    columns = _ROOM_COLUMNS if count_members else _ROOM_COLUMNS_NO_COUNT
    row = conn.execute(f"SELECT {columns} FROM rooms r WHERE r.room_id = ?", (room_id,)).fetchone()
    return None if row is None else _room(row)


def find_dm(conn: sqlite3.Connection, dm_key: str) -> Room | None:
    row = conn.execute(
        f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.dm_key = ?", (dm_key,)
    ).fetchone()
    return None if row is None else _room(row)


def update_room_txn(
    conn: sqlite3.Connection, room_id: str, changes: dict[str, Any], now_ms: int
) -> None:
    allowed = {"name", "topic", "is_public", "state", "thresholds", "room_type"}
    for key, value in changes.items():
        if key not in allowed:
            raise ValueError(f"not a room field: {key}")
        stored = orjson.dumps(value).decode() if key == "thresholds" else value
        conn.execute(f"UPDATE rooms SET {key} = ? WHERE room_id = ?", (stored, room_id))
    conn.execute("UPDATE rooms SET updated_at_ms = ? WHERE room_id = ?", (now_ms, room_id))


def rooms_for(
    conn: sqlite3.Connection, participant_id: str, *, limit: int, after: str | None
) -> list[Room]:
    """Rooms the participant has joined, oldest first, paged by room id."""
    rows = conn.execute(
        f"SELECT {_ROOM_COLUMNS} FROM memberships mm JOIN rooms r ON r.room_id = mm.room_id"
        " WHERE mm.participant_id = ? AND mm.membership = 'join' AND r.room_id > ?"
        " ORDER BY r.room_id LIMIT ?",
        (participant_id, after or "", limit),
    )
    return [_room(r) for r in rows]


def public_rooms(
    conn: sqlite3.Connection, *, query: str | None, limit: int, after: str | None
) -> list[Room]:
    sql = (
        f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.is_public = 1 AND r.state = 'open'"
        " AND r.room_id > ?"
    )
    params: list[Any] = [after or ""]
    if query:
        sql += " AND (r.name LIKE ? ESCAPE '\\' OR r.topic LIKE ? ESCAPE '\\')"
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [like, like]
    sql += " ORDER BY r.room_id LIMIT ?"
    params.append(limit)
    return [_room(r) for r in conn.execute(sql, params)]


def get_membership(
    conn: sqlite3.Connection, room_id: str, participant_id: str
) -> Membership | None:
    row = conn.execute(
        "SELECT * FROM memberships WHERE room_id = ? AND participant_id = ?",
        (room_id, participant_id),
    ).fetchone()
    return None if row is None else _membership(row)


def list_members(
    conn: sqlite3.Connection, room_id: str, *, memberships: tuple[str, ...] = ("join",)
) -> list[Membership]:
    marks = ",".join("?" * len(memberships))
    rows = conn.execute(
        f"SELECT * FROM memberships WHERE room_id = ? AND membership IN ({marks})"
        " ORDER BY power_level DESC, participant_id",
        (room_id, *memberships),
    )
    return [_membership(r) for r in rows]


def joined_ids(conn: sqlite3.Connection, room_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT participant_id FROM memberships WHERE room_id = ? AND membership = 'join'",
        (room_id,),
    )
    return [r[0] for r in rows]


def all_joined(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(room_id, participant_id) for every join; the hub loads this at start-up."""
    rows = conn.execute("SELECT room_id, participant_id FROM memberships WHERE membership = 'join'")
    return [(r[0], r[1]) for r in rows]


def set_membership_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    participant_id: str,
    membership: str,
    changed_by: str,
    now_ms: int,
    position: int,
    power_level: int | None = None,
    read_only: bool | None = None,
) -> None:
    """Record a membership change made by the event at ``position``.

    Keeps ``membership_spans`` in step: a join opens a span at ``position``;
    leaving (leave, ban) closes the open span at ``position``, so the
    participant still sees the event that removed them.
    """
    before = get_membership(conn, room_id, participant_id)
    was_joined = before is not None and before.membership == "join"
    joined_at = before.joined_at_ms if before is not None and was_joined else None
    if membership == "join" and not was_joined:
        joined_at = now_ms
    conn.execute(
        "INSERT INTO memberships (room_id, participant_id, membership, power_level, read_only,"
        " changed_by, joined_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (room_id, participant_id) DO UPDATE SET membership = excluded.membership,"
        " power_level = excluded.power_level, read_only = excluded.read_only,"
        " changed_by = excluded.changed_by, joined_at_ms = excluded.joined_at_ms,"
        " updated_at_ms = excluded.updated_at_ms",
        (
            room_id,
            participant_id,
            membership,
            power_level if power_level is not None else (before.power_level if before else 0),
            int(read_only if read_only is not None else (before.read_only if before else False)),
            changed_by,
            joined_at,
            now_ms,
        ),
    )
    if membership == "join" and not was_joined:
        conn.execute(
            "INSERT INTO membership_spans (room_id, participant_id, from_pos) VALUES (?, ?, ?)",
            (room_id, participant_id, position),
        )
    elif membership != "join" and was_joined:
        conn.execute(
            "UPDATE membership_spans SET to_pos = ? WHERE room_id = ? AND participant_id = ?"
            " AND to_pos IS NULL",
            (position, room_id, participant_id),
        )


def set_power_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    participant_id: str,
    power_level: int,
    read_only: bool | None,
    now_ms: int,
) -> None:
    if read_only is None:
        conn.execute(
            "UPDATE memberships SET power_level = ?, updated_at_ms = ?"
            " WHERE room_id = ? AND participant_id = ?",
            (power_level, now_ms, room_id, participant_id),
        )
    else:
        conn.execute(
            "UPDATE memberships SET power_level = ?, read_only = ?, updated_at_ms = ?"
            " WHERE room_id = ? AND participant_id = ?",
            (power_level, int(read_only), now_ms, room_id, participant_id),
        )


def count_rooms_for(conn: sqlite3.Connection, participant_id: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM memberships WHERE participant_id = ? AND membership = 'join'",
        (participant_id,),
    ).fetchone()
    return int(row[0])


def count_members(conn: sqlite3.Connection, room_id: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM memberships WHERE room_id = ? AND membership = 'join'", (room_id,)
    ).fetchone()
    return int(row[0])
