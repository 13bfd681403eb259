"""Per-member room settings, AI engagement and snoozes.

The state snapshot reads a whole room with a handful of indexed queries:
members joined to participants and settings in one pass, never one query per
member.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemberRow:
    participant_id: str
    membership: str
    power_level: int
    read_only: bool
    joined_at_ms: int | None
    display_name: str | None
    participant_type: str | None
    avatar_url: str | None
    notification_mode: str
    muted_until_ms: int | None


@dataclass(frozen=True, slots=True)
class Engagement:
    participant_id: str  # '' = room-wide
    mode: str | None
    response_mode: str | None


@dataclass(frozen=True, slots=True)
class Snooze:
    snooze_id: str
    participant_id: str
    room_id: str
    event_id: str
    until_ms: int
    created_at_ms: int


def members_with_settings(conn: sqlite3.Connection, room_id: str) -> list[MemberRow]:
    rows = conn.execute(
        "SELECT m.participant_id, m.membership, m.power_level, m.read_only, m.joined_at_ms,"
        " p.display_name, p.participant_type, p.avatar_url,"
        " COALESCE(s.notification_mode, 'mentions') AS notification_mode, s.muted_until_ms"
        " FROM memberships m"
        " LEFT JOIN participants p ON p.participant_id = m.participant_id"
        " LEFT JOIN member_settings s ON s.room_id = m.room_id"
        "  AND s.participant_id = m.participant_id"
        " WHERE m.room_id = ? AND m.membership = 'join'"
        " ORDER BY m.power_level DESC, m.participant_id",
        (room_id,),
    )
    return [
        MemberRow(
            participant_id=r[0],
            membership=r[1],
            power_level=r[2],
            read_only=bool(r[3]),
            joined_at_ms=r[4],
            display_name=r[5],
            participant_type=r[6],
            avatar_url=r[7],
            notification_mode=r[8],
            muted_until_ms=r[9],
        )
        for r in rows
    ]


def _upsert_setting(
    conn: sqlite3.Connection, room_id: str, participant_id: str, column: str, value: object
) -> None:
    assert column in ("notification_mode", "muted_until_ms")
    conn.execute(
        f"INSERT INTO member_settings (room_id, participant_id, {column}) VALUES (?, ?, ?)"
        f" ON CONFLICT (room_id, participant_id) DO UPDATE SET {column} = excluded.{column}",
        (room_id, participant_id, value),
    )


def set_notification_mode_txn(
    conn: sqlite3.Connection, room_id: str, participant_id: str, mode: str
) -> None:
    _upsert_setting(conn, room_id, participant_id, "notification_mode", mode)


def set_muted_until_txn(
    conn: sqlite3.Connection, room_id: str, participant_id: str, until_ms: int | None
) -> None:
    _upsert_setting(conn, room_id, participant_id, "muted_until_ms", until_ms)


def member_setting(
    conn: sqlite3.Connection, room_id: str, participant_id: str
) -> tuple[str, int | None]:
    row = conn.execute(
        "SELECT notification_mode, muted_until_ms FROM member_settings"
        " WHERE room_id = ? AND participant_id = ?",
        (room_id, participant_id),
    ).fetchone()
    return (row[0], row[1]) if row else ("mentions", None)


def engagement(conn: sqlite3.Connection, room_id: str) -> list[Engagement]:
    rows = conn.execute(
        "SELECT participant_id, mode, response_mode FROM room_engagement WHERE room_id = ?"
        " ORDER BY participant_id",
        (room_id,),
    )
    return [Engagement(r[0], r[1], r[2]) for r in rows]


def set_engagement_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    participant_id: str,
    column: str,
    value: str | None,
    updated_by: str,
    now_ms: int,
) -> None:
    assert column in ("mode", "response_mode")
    conn.execute(
        f"INSERT INTO room_engagement (room_id, participant_id, {column}, updated_by,"
        f" updated_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, participant_id)"
        f" DO UPDATE SET {column} = excluded.{column}, updated_by = excluded.updated_by,"
        f" updated_at_ms = excluded.updated_at_ms",
        (room_id, participant_id, value, updated_by, now_ms),
    )


def add_snooze_txn(conn: sqlite3.Connection, snooze: Snooze) -> Snooze:
    conn.execute(
        "INSERT INTO snoozes (snooze_id, participant_id, room_id, event_id, until_ms,"
        " created_at_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (participant_id, event_id)"
        " DO UPDATE SET until_ms = excluded.until_ms",
        (
            snooze.snooze_id,
            snooze.participant_id,
            snooze.room_id,
            snooze.event_id,
            snooze.until_ms,
            snooze.created_at_ms,
        ),
    )
    row = conn.execute(
        "SELECT * FROM snoozes WHERE participant_id = ? AND event_id = ?",
        (snooze.participant_id, snooze.event_id),
    ).fetchone()
    return Snooze(*row)


def active_snoozes(
    conn: sqlite3.Connection, participant_id: str, now_ms: int, room_id: str | None = None
) -> list[Snooze]:
    if room_id is None:
        rows = conn.execute(
            "SELECT * FROM snoozes WHERE participant_id = ? AND until_ms > ? ORDER BY until_ms",
            (participant_id, now_ms),
        )
    else:
        rows = conn.execute(
            "SELECT * FROM snoozes WHERE participant_id = ? AND room_id = ? AND until_ms > ?"
            " ORDER BY until_ms",
            (participant_id, room_id, now_ms),
        )
    return [Snooze(*r) for r in rows]


def delete_snooze_txn(conn: sqlite3.Connection, participant_id: str, snooze_id: str) -> bool:
    cur = conn.execute(
        "DELETE FROM snoozes WHERE participant_id = ? AND snooze_id = ?",
        (participant_id, snooze_id),
    )
    return cur.rowcount == 1
