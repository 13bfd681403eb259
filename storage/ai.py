"""AI participants (migration 0008): the participant row plus model, prompt, creator."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage import participants as pstore


@dataclass(frozen=True, slots=True)
class AiParticipant:
    participant_id: str
    tenant_id: str
    name: str
    display_name: str
    participant_type: str
    model: str
    system_prompt: str
    engagement: str | None
    created_by: str
    created_at_ms: int
    deleted_at_ms: int | None = None


_SELECT = (
    "SELECT a.participant_id, a.tenant_id, a.name, p.display_name, p.participant_type,"
    " a.model, a.system_prompt, a.engagement, a.created_by, a.created_at_ms, a.deleted_at_ms"
    " FROM ai_participants a JOIN participants p ON p.participant_id = a.participant_id"
)


def _row(r: sqlite3.Row | tuple[object, ...]) -> AiParticipant:
    return AiParticipant(*tuple(r))


def create_ai_txn(conn: sqlite3.Connection, ai: AiParticipant) -> AiParticipant:
    pstore.create_participant_txn(
        conn,
        participant_id=ai.participant_id,
        username=None,
        display_name=ai.display_name,
        participant_type=ai.participant_type,
        password_hash=None,
        is_admin=False,
        now_ms=ai.created_at_ms,
        tenant_id=ai.tenant_id,
    )
    conn.execute(
        "INSERT INTO ai_participants (participant_id, tenant_id, name, model, system_prompt,"
        " engagement, created_by, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ai.participant_id,
            ai.tenant_id,
            ai.name,
            ai.model,
            ai.system_prompt,
            ai.engagement,
            ai.created_by,
            ai.created_at_ms,
        ),
    )
    found = get_ai(conn, ai.participant_id)
    assert found is not None
    return found


def get_ai(conn: sqlite3.Connection, participant_id: str) -> AiParticipant | None:
    """A live (not deleted) AI participant."""
    r = conn.execute(
        f"{_SELECT} WHERE a.participant_id = ? AND a.deleted_at_ms IS NULL", (participant_id,)
    ).fetchone()
    return None if r is None else _row(r)


def list_ai(
    conn: sqlite3.Connection, tenant_id: str, *, limit: int, after: str | None
) -> list[AiParticipant]:
    rows = conn.execute(
        f"{_SELECT} WHERE a.tenant_id = ? AND a.deleted_at_ms IS NULL AND a.participant_id > ?"
        " ORDER BY a.participant_id LIMIT ?",
        (tenant_id, after or "", limit),
    ).fetchall()
    return [_row(r) for r in rows]


def live_ai(conn: sqlite3.Connection) -> list[AiParticipant]:
    rows = conn.execute(f"{_SELECT} WHERE a.deleted_at_ms IS NULL").fetchall()
    return [_row(r) for r in rows]


def ai_memberships(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(room_id, ai participant id) for every live AI joined to a room."""
    rows = conn.execute(
        "SELECT m.room_id, m.participant_id FROM memberships m"
        " JOIN ai_participants a ON a.participant_id = m.participant_id"
        " WHERE m.membership = 'join' AND a.deleted_at_ms IS NULL"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def joined_rooms(conn: sqlite3.Connection, participant_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT room_id FROM memberships WHERE participant_id = ? AND membership = 'join'",
        (participant_id,),
    ).fetchall()
    return [r[0] for r in rows]


def mark_deleted_txn(conn: sqlite3.Connection, participant_id: str, now_ms: int) -> bool:
    cur = conn.execute(
        "UPDATE ai_participants SET deleted_at_ms = ? WHERE participant_id = ?"
        " AND deleted_at_ms IS NULL",
        (now_ms, participant_id),
    )
    return cur.rowcount == 1


def engagement_info(conn: sqlite3.Connection, room_id: str) -> tuple[str, dict[str, str | None]]:
    """The room's type and its stored engagement modes (``''`` = room-wide)."""
    row = conn.execute("SELECT room_type FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
    modes = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT participant_id, mode FROM room_engagement WHERE room_id = ?", (room_id,)
        )
    }
    return (row[0] if row else ""), modes
