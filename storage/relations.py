"""Reactions, read markers, message ordinals and unread counts."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadMarker:
    event_id: str
    position: int


def record_message_txn(
    conn: sqlite3.Connection, *, event_id: str, room_id: str, sender_id: str, position: int
) -> None:
    """Number a new message in its room and among its sender's (one statement)."""
    conn.execute(
        "INSERT INTO message_ordinals (room_id, position, event_id, sender_id, room_seq,"
        " sender_seq) VALUES (?, ?, ?, ?,"
        " COALESCE((SELECT room_seq FROM message_ordinals WHERE room_id = ?"
        "  ORDER BY position DESC LIMIT 1), 0) + 1,"
        " COALESCE((SELECT sender_seq FROM message_ordinals WHERE room_id = ?"
        "  AND sender_id = ? ORDER BY position DESC LIMIT 1), 0) + 1)",
        (room_id, position, event_id, sender_id, room_id, room_id, sender_id),
    )


def mark_redacted_txn(conn: sqlite3.Connection, room_id: str, position: int) -> None:
    conn.execute(
        "UPDATE message_ordinals SET redacted = 1 WHERE room_id = ? AND position = ?",
        (room_id, position),
    )


def _seq_at(conn: sqlite3.Connection, room_id: str, position: int, sender_id: str | None) -> int:
    """The room's (or one sender's) message count up to and including ``position``."""
    if sender_id is None:
        row = conn.execute(
            "SELECT room_seq FROM message_ordinals WHERE room_id = ? AND position <= ?"
            " ORDER BY position DESC LIMIT 1",
            (room_id, position),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT sender_seq FROM message_ordinals WHERE room_id = ? AND sender_id = ?"
            " AND position <= ? ORDER BY position DESC LIMIT 1",
            (room_id, sender_id, position),
        ).fetchone()
    return int(row[0]) if row else 0


LAST = 2**62


def unread_count(conn: sqlite3.Connection, room_id: str, participant_id: str) -> int:
    """Messages from others after the participant's read marker, redacted ones excluded."""
    marker = get_read_marker(conn, room_id, participant_id)
    position = marker.position if marker else 0
    room_after = _seq_at(conn, room_id, LAST, None) - _seq_at(conn, room_id, position, None)
    own_after = _seq_at(conn, room_id, LAST, participant_id) - _seq_at(
        conn, room_id, position, participant_id
    )
    redacted_others = conn.execute(
        "SELECT COUNT(*) FROM message_ordinals WHERE room_id = ? AND position > ?"
        " AND redacted = 1 AND sender_id != ?",
        (room_id, position, participant_id),
    ).fetchone()[0]
    return max(0, room_after - own_after - int(redacted_others))


def get_read_marker(
    conn: sqlite3.Connection, room_id: str, participant_id: str
) -> ReadMarker | None:
    row = conn.execute(
        "SELECT event_id, position FROM read_markers WHERE room_id = ? AND participant_id = ?",
        (room_id, participant_id),
    ).fetchone()
    return None if row is None else ReadMarker(row[0], int(row[1]))


def set_read_marker_txn(
    conn: sqlite3.Connection,
    *,
    room_id: str,
    participant_id: str,
    event_id: str,
    position: int,
    now_ms: int,
) -> bool:
    """Move the marker forward; returns False (and changes nothing) if it would go back."""
    current = get_read_marker(conn, room_id, participant_id)
    if current is not None and current.position >= position:
        return False
    conn.execute(
        "INSERT INTO read_markers (room_id, participant_id, event_id, position, updated_at_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, participant_id) DO UPDATE SET"
        " event_id = excluded.event_id, position = excluded.position,"
        " updated_at_ms = excluded.updated_at_ms",
        (room_id, participant_id, event_id, position, now_ms),
    )
    return True


def reaction_exists(conn: sqlite3.Connection, target: str, sender_id: str, emoji: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM reactions WHERE target_event_id = ? AND sender_id = ? AND emoji = ?",
        (target, sender_id, emoji),
    ).fetchone()
    return row is not None


def add_reaction_txn(
    conn: sqlite3.Connection,
    *,
    target: str,
    sender_id: str,
    emoji: str,
    room_id: str,
    event_id: str,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO reactions (target_event_id, sender_id, emoji, room_id, event_id,"
        " created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (target, sender_id, emoji, room_id, event_id, now_ms),
    )


def remove_reaction_txn(conn: sqlite3.Connection, target: str, sender_id: str, emoji: str) -> None:
    conn.execute(
        "DELETE FROM reactions WHERE target_event_id = ? AND sender_id = ? AND emoji = ?",
        (target, sender_id, emoji),
    )


def reaction_summary(conn: sqlite3.Connection, target: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT emoji, COUNT(*) FROM reactions WHERE target_event_id = ? GROUP BY emoji"
        " ORDER BY emoji",
        (target,),
    )
    return {r[0]: int(r[1]) for r in rows}
