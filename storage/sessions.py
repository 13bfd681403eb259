"""Sessions and their messages (migration 0007). Sync ``*_txn`` functions for the writer,
plain reads for the read pool. Soft delete keeps every row; :func:`purge_session_txn`
removes them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from storage.errors import NotFound


@dataclass(frozen=True, slots=True)
class Session:
    seq: int
    session_id: str
    tenant_id: str
    owner_id: str
    model: str
    title: str | None
    system_prompt: str | None
    metadata: dict[str, Any]
    status: str
    message_count: int
    generating_message_id: str | None
    created_at_ms: int
    updated_at_ms: int
    deleted_at_ms: int | None


@dataclass(frozen=True, slots=True)
class SessionMessage:
    message_id: str
    session_id: str
    role: str
    content: str
    tokens: int | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class NewReply:
    """An assistant reply as stored once its generation ended."""

    message_id: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    created_at_ms: int


def _session(row: sqlite3.Row) -> Session:
    return Session(
        seq=row["seq"],
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        owner_id=row["owner_id"],
        model=row["model"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        metadata=json.loads(row["metadata"]),
        status=row["status"],
        message_count=row["message_count"],
        generating_message_id=row["generating_message_id"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        deleted_at_ms=row["deleted_at_ms"],
    )


def _message(row: sqlite3.Row) -> SessionMessage:
    return SessionMessage(
        message_id=row["message_id"],
        session_id=row["session_id"],
        role=row["role"],
        content=row["content"],
        tokens=row["tokens"],
        finish_reason=row["finish_reason"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created_at_ms=row["created_at_ms"],
    )


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- sessions


def create_session_txn(
    conn: sqlite3.Connection,
    *,
    session_id: str,
    tenant_id: str,
    owner_id: str,
    model: str,
    title: str | None,
    system_prompt: str | None,
    metadata: Mapping[str, Any],
    now_ms: int,
    max_per_owner: int,
) -> Session | None:
    """The new session, or ``None`` when the owner already has ``max_per_owner``."""
    if count_owned(conn, owner_id) >= max_per_owner:
        return None
    conn.execute(
        "INSERT INTO sessions (session_id, tenant_id, owner_id, model, title, system_prompt,"
        " metadata, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            tenant_id,
            owner_id,
            model,
            title,
            system_prompt,
            _dumps(metadata),
            now_ms,
            now_ms,
        ),
    )
    found = get_session(conn, session_id)
    assert found is not None
    return found


def count_owned(conn: sqlite3.Connection, owner_id: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM sessions WHERE owner_id = ? AND deleted_at_ms IS NULL", (owner_id,)
    ).fetchone()
    return int(row[0])


def get_session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    """The session, deleted or not (callers decide who may see a deleted one: nobody)."""
    row = conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    return None if row is None else _session(row)


def list_sessions(
    conn: sqlite3.Connection,
    *,
    owner_id: str | None,
    tenant_id: str,
    before_seq: int | None,
    limit: int,
) -> list[Session]:
    """Not-deleted sessions, newest first: the owner's, or (``owner_id=None``) the tenant's."""
    where = ["deleted_at_ms IS NULL", "tenant_id = ?"]
    args: list[Any] = [tenant_id]
    if owner_id is not None:
        where.append("owner_id = ?")
        args.append(owner_id)
    if before_seq is not None:
        where.append("seq < ?")
        args.append(before_seq)
    rows = conn.execute(
        f"SELECT * FROM sessions WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [_session(r) for r in rows]


UPDATABLE = frozenset({"title", "system_prompt", "metadata", "status"})


def update_session_txn(
    conn: sqlite3.Connection, session_id: str, changes: Mapping[str, Any], now_ms: int
) -> Session:
    sets: list[str] = ["updated_at_ms = ?"]
    args: list[Any] = [now_ms]
    for key, value in changes.items():
        if key not in UPDATABLE:
            raise ValueError(f"not an updatable field: {key}")
        sets.append(f"{key} = ?")
        args.append(_dumps(value) if key == "metadata" else value)
    cur = conn.execute(
        f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ? AND deleted_at_ms IS NULL",
        (*args, session_id),
    )
    if cur.rowcount != 1:
        raise NotFound(session_id)
    found = get_session(conn, session_id)
    assert found is not None
    return found


def soft_delete_txn(
    conn: sqlite3.Connection, session_id: str, deleted_by: str, now_ms: int
) -> None:
    cur = conn.execute(
        "UPDATE sessions SET deleted_at_ms = ?, deleted_by = ?, updated_at_ms = ?"
        " WHERE session_id = ? AND deleted_at_ms IS NULL",
        (now_ms, deleted_by, now_ms, session_id),
    )
    if cur.rowcount != 1:
        raise NotFound(session_id)


def purge_session_txn(conn: sqlite3.Connection, session_id: str) -> int:
    """Hard-delete a session (deleted or not) and its messages; how many messages went."""
    messages = conn.execute(
        "DELETE FROM session_messages WHERE session_id = ?", (session_id,)
    ).rowcount
    if conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount != 1:
        raise NotFound(session_id)
    return int(messages)


# --------------------------------------------------------------------------- messages


def add_user_message_txn(
    conn: sqlite3.Connection,
    *,
    session_id: str,
    message_id: str,
    content: str,
    tokens: int,
    reply_id: str,
    now_ms: int,
) -> None:
    """Store the user's message and mark ``reply_id`` as generating, in one transaction."""
    cur = conn.execute(
        "UPDATE sessions SET message_count = message_count + 1, generating_message_id = ?,"
        " updated_at_ms = ? WHERE session_id = ? AND deleted_at_ms IS NULL",
        (reply_id, now_ms, session_id),
    )
    if cur.rowcount != 1:
        raise NotFound(session_id)
    conn.execute(
        "INSERT INTO session_messages (message_id, session_id, role, content, tokens,"
        " created_at_ms) VALUES (?, ?, 'user', ?, ?, ?)",
        (message_id, session_id, content, tokens, now_ms),
    )


def add_reply_txn(conn: sqlite3.Connection, session_id: str, reply: NewReply) -> None:
    """Store the assistant's reply (even into a soft-deleted session: audit keeps it)."""
    conn.execute(
        "INSERT INTO session_messages (message_id, session_id, role, content, tokens,"
        " finish_reason, prompt_tokens, completion_tokens, created_at_ms)"
        " VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?, ?)",
        (
            reply.message_id,
            session_id,
            reply.content,
            reply.completion_tokens,
            reply.finish_reason,
            reply.prompt_tokens,
            reply.completion_tokens,
            reply.created_at_ms,
        ),
    )
    conn.execute(
        "UPDATE sessions SET message_count = message_count + 1, updated_at_ms = ?,"
        " generating_message_id = CASE WHEN generating_message_id = ? THEN NULL"
        " ELSE generating_message_id END WHERE session_id = ?",
        (reply.created_at_ms, reply.message_id, session_id),
    )


def close_interrupted_txn(conn: sqlite3.Connection, now_ms: int) -> int:
    """At start-up: every reply a stopped server left generating is stored as an empty
    ``finish_reason: "error"`` reply. Returns how many."""
    rows = conn.execute(
        "SELECT session_id, generating_message_id FROM sessions"
        " WHERE generating_message_id IS NOT NULL"
    ).fetchall()
    for row in rows:
        add_reply_txn(conn, row[0], NewReply(row[1], "", "error", 0, 0, now_ms))
    return len(rows)


def list_messages(conn: sqlite3.Connection, session_id: str) -> list[SessionMessage]:
    rows = conn.execute(
        "SELECT * FROM session_messages WHERE session_id = ? ORDER BY seq", (session_id,)
    ).fetchall()
    return [_message(r) for r in rows]


def recent_messages(
    conn: sqlite3.Connection, session_id: str, limit: int, max_cost: int | None = None
) -> list[SessionMessage]:
    """The newest ``limit`` messages, oldest first (what a context cut starts from).

    With ``max_cost``, older messages stop once the newest ones already cost more than
    that many tokens (stored count + 4 per message, as :mod:`protocol.context` counts):
    those could not fit a prompt of that budget anyway.
    """
    rows = conn.execute(
        "SELECT * FROM (SELECT *, SUM(CASE WHEN content = '' THEN 0"
        " ELSE COALESCE(tokens, LENGTH(content) / 4 + 1) + 4 END)"
        " OVER (ORDER BY seq DESC) AS cost FROM session_messages WHERE session_id = ?"
        " ORDER BY seq DESC LIMIT ?) AS recent WHERE cost <= ? ORDER BY seq",
        (session_id, limit, max_cost if max_cost is not None else 2**62),
    ).fetchall()
    return [_message(r) for r in rows]


def session_and_recent(
    conn: sqlite3.Connection,
    session_id: str,
    limit: int,
    max_cost_for: Callable[[Session], int | None] | None = None,
) -> tuple[Session | None, list[SessionMessage]]:
    """The session (deleted or not) and its recent messages (:func:`recent_messages`),
    in one read; ``max_cost_for(session)`` gives the token budget to stop at."""
    found = get_session(conn, session_id)
    if found is None:
        return None, []
    max_cost = max_cost_for(found) if max_cost_for is not None else None
    return found, recent_messages(conn, session_id, limit, max_cost)


def get_message(conn: sqlite3.Connection, message_id: str) -> SessionMessage | None:
    row = conn.execute(
        "SELECT * FROM session_messages WHERE message_id = ?", (message_id,)
    ).fetchone()
    return None if row is None else _message(row)
