"""The append-only event table: append, read back, page, catch up.

Every read returns the *read model*: a message shows its latest edit's
content with ``original_content`` and ``edited_at``; an edit event read on its
own (the stream, /sync) is presented as that message, carrying the edit's
own ``stream_position``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Literal

import orjson

from protocol.events import Event, EventDraft, EventType, build_event
from storage import media as media_store
from storage import relations
from storage.errors import NotFound

Direction = Literal["back", "forward"]

# The newest edit of a message, if any (an index seek on relates_to).
_LATEST_EDIT = (
    "(SELECT x.stream_position FROM events x WHERE x.relates_to = e.event_id"
    " AND x.type = 'swp.room.edit' ORDER BY x.stream_position DESC LIMIT 1)"
)
_SELECT = f"SELECT e.*, {_LATEST_EDIT} AS latest_edit FROM events e"


_RELATION_KEYS = frozenset({"event_id", "emoji", "action", "redacted_by", "reason"})


def _row_event(row: sqlite3.Row) -> Event:
    return Event(
        stream_position=row["stream_position"],
        event_id=row["event_id"],
        room_id=row["room_id"],
        type=EventType(row["type"]),
        sender_id=row["sender_id"],
        actor_id=row["actor_id"],
        content=orjson.loads(row["content"]),
        origin_ts_ms=row["origin_ts_ms"],
        depth=row["depth"],
        prev_event_ids=tuple(orjson.loads(row["prev_event_ids"])),
        content_hash=row["content_hash"],
        relates_to=row["relates_to"],
        redacted_at_ms=row["redacted_at_ms"],
        redacted_by=row["redacted_by"],
        redaction_reason=row["redaction_reason"],
    )


def _raw_by_position(conn: sqlite3.Connection, position: int) -> Event:
    row = conn.execute("SELECT * FROM events WHERE stream_position = ?", (position,)).fetchone()
    return _row_event(row)


def _present(conn: sqlite3.Connection, row: sqlite3.Row) -> Event:
    """Apply the read model to one row."""
    event = _row_event(row)
    if event.type in (EventType.REDACTION, EventType.REACTION):
        # These frames name their target at the top level (CONTRACT section 7).
        return replace(event, extra={k: v for k, v in event.content.items() if k in _RELATION_KEYS})
    if event.type is EventType.MESSAGE and not event.is_redacted:
        summary = relations.reaction_summary(conn, event.event_id)
        if summary:
            event = replace(event, extra={"reactions": summary})
    if event.type is EventType.MESSAGE and row["latest_edit"] is not None and not event.is_redacted:
        edit = _raw_by_position(conn, row["latest_edit"])
        return replace(
            event,
            content=edit.content,
            original_content=event.content,
            edited_at_ms=edit.origin_ts_ms,
        )
    if event.type is EventType.EDIT and event.relates_to is not None:
        target = _raw_by_id(conn, event.relates_to)
        if target is not None:
            return replace(
                event,
                event_id=target.event_id,
                sender_id=target.sender_id,
                actor_id=target.actor_id,
                original_content=target.content,
                edited_at_ms=event.origin_ts_ms,
                content=target.content if target.is_redacted else event.content,
                redacted_at_ms=target.redacted_at_ms,
                redacted_by=target.redacted_by,
                redaction_reason=target.redaction_reason,
                extra={"edit_event_id": event.event_id},
            )
    return event


def _raw_by_id(conn: sqlite3.Connection, event_id: str) -> Event | None:
    row = conn.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
    return None if row is None else _row_event(row)


def next_position_txn(conn: sqlite3.Connection) -> int:
    """Take the next stream position from the ``stream_head`` row (migration 0012).

    The UPDATE holds the row lock (PostgreSQL) or runs under the write lock
    (SQLite) until the transaction ends, so positions are gapless and in commit
    order, across processes; rolling back (to a savepoint) gives the number back.
    """
    row = conn.execute(
        "UPDATE stream_head SET position = position + 1 WHERE stream = 'events' RETURNING position"
    ).fetchone()
    return int(row[0])


def head_position(conn: sqlite3.Connection) -> int:
    """The last committed stream position (what a catch-up reads up to)."""
    row = conn.execute("SELECT position FROM stream_head WHERE stream = 'events'").fetchone()
    return 0 if row is None else int(row[0])


def append_event_txn(conn: sqlite3.Connection, draft: EventDraft, *, now_ms: int) -> Event:
    """Chain, hash and store one event; return it with its stream position."""
    head = conn.execute(
        "SELECT last_event_id, last_depth FROM rooms WHERE room_id = ?", (draft.room_id,)
    ).fetchone()
    if head is None:
        raise NotFound(f"room {draft.room_id} does not exist")
    prev = (head["last_event_id"],) if head["last_event_id"] else ()
    event = build_event(
        draft,
        stream_position=0,
        origin_ts_ms=now_ms,
        prev_event_ids=prev,
        prev_depth=head["last_depth"],
    )
    position = next_position_txn(conn)
    conn.execute(
        "INSERT INTO events (stream_position, event_id, room_id, type, sender_id, actor_id,"
        " content, content_hash, origin_ts_ms, depth, prev_event_ids, relates_to)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            position,
            event.event_id,
            event.room_id,
            str(event.type),
            event.sender_id,
            event.actor_id,
            orjson.dumps(event.content).decode(),
            event.content_hash,
            event.origin_ts_ms,
            event.depth,
            orjson.dumps(list(event.prev_event_ids)).decode(),
            event.relates_to,
        ),
    )
    conn.execute(
        "UPDATE rooms SET last_event_id = ?, last_depth = ? WHERE room_id = ?",
        (event.event_id, event.depth, event.room_id),
    )
    if event.type is EventType.MESSAGE:
        relations.record_message_txn(
            conn,
            event_id=event.event_id,
            room_id=event.room_id,
            sender_id=event.sender_id,
            position=position,
        )
    if event.type in (EventType.MESSAGE, EventType.EDIT):
        media_store.record_refs_txn(
            conn, event_id=event.event_id, room_id=event.room_id, content=event.content
        )
    if draft.event_uuid is not None:
        conn.execute(
            "INSERT INTO idempotency (sender_id, event_uuid, event_id, created_at_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (sender_id, event_uuid) DO UPDATE SET"
            " event_id = excluded.event_id, created_at_ms = excluded.created_at_ms",
            (draft.sender_id, draft.event_uuid, event.event_id, now_ms),
        )
    stored = replace(event, stream_position=position)
    journal = getattr(conn, "journal", None)
    if journal is not None:
        journal.append(stored)
    return stored


_NEEDS_READ_MODEL = frozenset({EventType.EDIT, EventType.REDACTION, EventType.REACTION})


def presented(conn: sqlite3.Connection, event: Event) -> Event:
    """A just-appended event as readers see it.

    Most events read back exactly as they were appended; edits, redactions and
    reactions are presented through the read model (an edit as its message).
    """
    if event.type not in _NEEDS_READ_MODEL:
        return event
    row = conn.execute(
        f"{_SELECT} WHERE e.stream_position = ?", (event.stream_position,)
    ).fetchone()
    return _present(conn, row)


def get_event(conn: sqlite3.Connection, event_id: str) -> Event | None:
    row = conn.execute(f"{_SELECT} WHERE e.event_id = ?", (event_id,)).fetchone()
    return None if row is None else _present(conn, row)


def events_after(conn: sqlite3.Connection, position: int, *, limit: int = 10_000) -> list[Event]:
    """Every event after ``position``, in order, through the read model (audits, tests)."""
    rows = conn.execute(
        f"{_SELECT} WHERE e.stream_position > ? ORDER BY e.stream_position LIMIT ?",
        (position, limit),
    ).fetchall()
    return [_present(conn, r) for r in rows]


def room_history(
    conn: sqlite3.Connection,
    room_id: str,
    *,
    from_pos: int | None,
    direction: Direction,
    limit: int,
) -> list[Event]:
    """One page of a room's timeline (edits folded into their messages).

    ``from_pos`` is exclusive; ``back`` pages newest first, ``forward`` oldest first.
    """
    if direction == "back":
        bound = from_pos if from_pos is not None else 2**62
        sql = (
            f"{_SELECT} WHERE e.room_id = ? AND e.stream_position < ?"
            " AND e.type != 'swp.room.edit' ORDER BY e.stream_position DESC LIMIT ?"
        )
    else:
        bound = from_pos if from_pos is not None else 0
        sql = (
            f"{_SELECT} WHERE e.room_id = ? AND e.stream_position > ?"
            " AND e.type != 'swp.room.edit' ORDER BY e.stream_position ASC LIMIT ?"
        )
    rows = conn.execute(sql, (room_id, bound, limit)).fetchall()
    return [_present(conn, r) for r in rows]


def visible_since(
    conn: sqlite3.Connection, participant_id: str, *, since: int, limit: int
) -> list[Event]:
    """Events after ``since`` in the participant's membership spans, ascending."""
    rows = conn.execute(
        f"{_SELECT} JOIN membership_spans s ON s.room_id = e.room_id"
        " WHERE s.participant_id = ? AND e.stream_position > ?"
        " AND e.stream_position >= s.from_pos"
        " AND (s.to_pos IS NULL OR e.stream_position <= s.to_pos)"
        " ORDER BY e.stream_position LIMIT ?",
        (participant_id, since, limit),
    ).fetchall()
    return [_present(conn, r) for r in rows]


def stored_chain(conn: sqlite3.Connection, room_id: str) -> list[Event]:
    """A room's events exactly as stored (no read model), in order: for audits."""
    rows = conn.execute(
        "SELECT * FROM events WHERE room_id = ? ORDER BY stream_position", (room_id,)
    ).fetchall()
    return [_row_event(r) for r in rows]


def max_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(stream_position) FROM events").fetchone()
    return int(row[0] or 0)


def idempotent_event(
    conn: sqlite3.Connection, *, sender_id: str, event_uuid: str, not_before_ms: int
) -> Event | None:
    """The event an earlier send with this key made, if within the window."""
    row = conn.execute(
        "SELECT event_id FROM idempotency WHERE sender_id = ? AND event_uuid = ?"
        " AND created_at_ms >= ?",
        (sender_id, event_uuid, not_before_ms),
    ).fetchone()
    return None if row is None else get_event(conn, row[0])


def prune_idempotency_txn(conn: sqlite3.Connection, *, older_than_ms: int) -> int:
    cur = conn.execute("DELETE FROM idempotency WHERE created_at_ms < ?", (older_than_ms,))
    return cur.rowcount


def redact_txn(
    conn: sqlite3.Connection,
    *,
    target_event_id: str,
    redacted_by: str,
    reason: str | None,
    now_ms: int,
) -> None:
    """Erase a message's content and every edit's content; keep identity and chain.

    ``secure_delete`` (storage.db) overwrites the freed bytes, so after a WAL
    checkpoint the text is gone from the database file.
    """
    conn.execute(
        "UPDATE events SET content = '{}', redacted_at_ms = ?, redacted_by = ?,"
        " redaction_reason = ? WHERE event_id = ? AND redacted_at_ms IS NULL",
        (now_ms, redacted_by, reason, target_event_id),
    )
    conn.execute(
        "UPDATE events SET content = '{}', redacted_at_ms = ?, redacted_by = ?"
        " WHERE relates_to = ? AND type = 'swp.room.edit' AND redacted_at_ms IS NULL",
        (now_ms, redacted_by, target_event_id),
    )
    conn.execute("DELETE FROM reactions WHERE target_event_id = ?", (target_event_id,))
    target = _raw_by_id(conn, target_event_id)
    if target is not None:
        relations.mark_redacted_txn(conn, target.room_id, target.stream_position)
    media_store.unref_event_txn(conn, target_event_id)
