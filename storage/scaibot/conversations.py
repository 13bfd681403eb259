"""Conversations, their messages (turns) and escalations, and the hand-off queue."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Conversation:
    seq: int
    conversation_id: str
    tenant_id: str
    bot_id: str
    visitor_id: str | None
    visitor_email: str | None
    visitor_name: str | None
    metadata: Any
    channel: str
    status: str
    started_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    conversation_id: str
    role: str
    content: str
    created_at_ms: int
    citations: list[dict[str, Any]] | None = None
    retrieved: list[dict[str, Any]] | None = None
    tokens: int | None = None
    latency_ms: int | None = None
    finish_reason: str | None = None
    author_id: str | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    seq: int
    escalation_id: str
    conversation_id: str
    tenant_id: str
    bot_id: str
    message_id: str | None
    rule_id: str
    rule_name: str
    trigger_type: str
    action_type: str
    message: str
    stage: str
    status: str
    attempts: int
    error: dict[str, Any] | None
    answered_by: str | None
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class NewConversation:
    conversation_id: str
    tenant_id: str
    bot_id: str
    visitor_id: str | None
    visitor_email: str | None
    visitor_name: str | None
    metadata: Any
    channel: str


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    tenant_id: str
    bot_id: str | None = None
    visitor_id: str | None = None
    status: str | None = None
    since_ms: int | None = None
    before_seq: int | None = None
    limit: int = 20
    bot_ids: tuple[str, ...] = field(default_factory=tuple)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _load(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        row["seq"],
        row["conversation_id"],
        row["tenant_id"],
        row["bot_id"],
        row["visitor_id"],
        row["visitor_email"],
        row["visitor_name"],
        _load(row["metadata"]),
        row["channel"],
        row["status"],
        row["started_at_ms"],
        row["updated_at_ms"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        row["message_id"],
        row["conversation_id"],
        row["role"],
        row["content"],
        row["created_at_ms"],
        _load(row["citations"]),
        _load(row["retrieved"]),
        row["tokens"],
        row["latency_ms"],
        row["finish_reason"],
        row["author_id"],
    )


def _escalation(row: sqlite3.Row) -> Escalation:
    return Escalation(
        row["seq"],
        row["escalation_id"],
        row["conversation_id"],
        row["tenant_id"],
        row["bot_id"],
        row["message_id"],
        row["rule_id"],
        row["rule_name"],
        row["trigger_type"],
        row["action_type"],
        row["message"],
        row["stage"],
        row["status"],
        row["attempts"],
        _load(row["error"]),
        row["answered_by"],
        row["created_at_ms"],
        row["updated_at_ms"],
    )


def create_conversation_txn(conn: sqlite3.Connection, new: NewConversation, now_ms: int) -> None:
    conn.execute(
        "INSERT INTO scaibot_conversations (conversation_id, tenant_id, bot_id, visitor_id, "
        "visitor_email, visitor_name, metadata, channel, status, started_at_ms, updated_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
        (
            new.conversation_id,
            new.tenant_id,
            new.bot_id,
            new.visitor_id,
            new.visitor_email,
            new.visitor_name,
            _json(new.metadata),
            new.channel,
            now_ms,
            now_ms,
        ),
    )


def get_conversation(conn: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    row = conn.execute(
        "SELECT * FROM scaibot_conversations WHERE conversation_id = ?", (conversation_id,)
    ).fetchone()
    return None if row is None else _conversation(row)


def list_conversations(conn: sqlite3.Connection, f: ConversationFilter) -> list[Conversation]:
    """Newest first; ``before_seq`` pages back."""
    sql = "SELECT * FROM scaibot_conversations WHERE tenant_id = ?"
    args: list[Any] = [f.tenant_id]
    for col, value in (("bot_id", f.bot_id), ("visitor_id", f.visitor_id), ("status", f.status)):
        if value is not None:
            sql += f" AND {col} = ?"
            args.append(value)
    if f.since_ms is not None:
        sql += " AND started_at_ms >= ?"
        args.append(f.since_ms)
    if f.before_seq is not None:
        sql += " AND seq < ?"
        args.append(f.before_seq)
    rows = conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, f.limit)).fetchall()
    return [_conversation(r) for r in rows]


def set_conversation_status_txn(
    conn: sqlite3.Connection, conversation_id: str, status: str, now_ms: int
) -> None:
    conn.execute(
        "UPDATE scaibot_conversations SET status = ?, updated_at_ms = ? WHERE conversation_id = ?",
        (status, now_ms, conversation_id),
    )


def add_message_txn(conn: sqlite3.Connection, m: Message) -> None:
    conn.execute(
        "INSERT INTO scaibot_messages (message_id, conversation_id, role, content, citations, "
        "retrieved, tokens, latency_ms, finish_reason, author_id, created_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            m.message_id,
            m.conversation_id,
            m.role,
            m.content,
            _json(m.citations),
            _json(m.retrieved),
            m.tokens,
            m.latency_ms,
            m.finish_reason,
            m.author_id,
            m.created_at_ms,
        ),
    )
    conn.execute(
        "UPDATE scaibot_conversations SET updated_at_ms = ? WHERE conversation_id = ?",
        (m.created_at_ms, m.conversation_id),
    )


def messages(conn: sqlite3.Connection, conversation_id: str) -> list[Message]:
    rows = conn.execute(
        "SELECT * FROM scaibot_messages WHERE conversation_id = ? ORDER BY seq",
        (conversation_id,),
    ).fetchall()
    return [_message(r) for r in rows]


def recent_messages(conn: sqlite3.Connection, conversation_id: str, limit: int) -> list[Message]:
    """The newest ``limit`` messages, oldest first."""
    if limit <= 0:
        return []
    rows = conn.execute(
        "SELECT * FROM scaibot_messages WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [_message(r) for r in reversed(rows)]


def recent_user_texts(conn: sqlite3.Connection, conversation_id: str, limit: int) -> list[str]:
    rows = conn.execute(
        "SELECT content FROM scaibot_messages WHERE conversation_id = ? AND role = 'user' "
        "ORDER BY seq DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return [r["content"] for r in reversed(rows)]


def add_escalation_txn(conn: sqlite3.Connection, e: Escalation) -> None:
    conn.execute(
        "INSERT INTO scaibot_escalations (escalation_id, conversation_id, tenant_id, bot_id, "
        "message_id, rule_id, rule_name, trigger_type, action_type, message, stage, status, "
        "attempts, error, answered_by, created_at_ms, updated_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.escalation_id,
            e.conversation_id,
            e.tenant_id,
            e.bot_id,
            e.message_id,
            e.rule_id,
            e.rule_name,
            e.trigger_type,
            e.action_type,
            e.message,
            e.stage,
            e.status,
            e.attempts,
            _json(e.error),
            e.answered_by,
            e.created_at_ms,
            e.updated_at_ms,
        ),
    )
    set_conversation_status_txn(conn, e.conversation_id, "escalated", e.created_at_ms)


def update_escalation_txn(
    conn: sqlite3.Connection,
    escalation_id: str,
    *,
    status: str,
    attempts: int,
    error: dict[str, Any] | None,
    now_ms: int,
) -> None:
    conn.execute(
        "UPDATE scaibot_escalations SET status = ?, attempts = ?, error = ?, updated_at_ms = ? "
        "WHERE escalation_id = ?",
        (status, attempts, _json(error), now_ms, escalation_id),
    )


def escalations(conn: sqlite3.Connection, conversation_id: str) -> list[Escalation]:
    rows = conn.execute(
        "SELECT * FROM scaibot_escalations WHERE conversation_id = ? ORDER BY seq",
        (conversation_id,),
    ).fetchall()
    return [_escalation(r) for r in rows]


def handoffs(
    conn: sqlite3.Connection,
    tenant_id: str,
    status: str | None,
    bot_id: str | None,
    before_seq: int | None,
    limit: int,
) -> list[Escalation]:
    """Hand-offs (``scaiqueue`` escalations) of a tenant, newest first."""
    sql = "SELECT * FROM scaibot_escalations WHERE tenant_id = ? AND action_type = 'scaiqueue'"
    args: list[Any] = [tenant_id]
    for col, value in (("status", status), ("bot_id", bot_id)):
        if value is not None:
            sql += f" AND {col} = ?"
            args.append(value)
    if before_seq is not None:
        sql += " AND seq < ?"
        args.append(before_seq)
    rows = conn.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
    return [_escalation(r) for r in rows]


def answer_handoffs_txn(
    conn: sqlite3.Connection, conversation_id: str, operator_id: str, now_ms: int
) -> int:
    cur = conn.execute(
        "UPDATE scaibot_escalations SET status = 'answered', answered_by = ?, updated_at_ms = ? "
        "WHERE conversation_id = ? AND action_type = 'scaiqueue' AND status = 'open'",
        (operator_id, now_ms, conversation_id),
    )
    return cur.rowcount


# --------------------------------------------------------------------------- erasure


def _without_knowledge(citations: Any, retrieved: Any, document_id: str | None) -> tuple[Any, Any]:
    """Citations without their snippets and retrieved chunks without their text, for
    one document (``document_id``) or for all (``None``)."""

    def hit(item: Any) -> bool:
        return isinstance(item, dict) and (
            document_id is None or item.get("document_id") == document_id
        )

    if isinstance(citations, list):
        citations = [
            {k: v for k, v in c.items() if k != "snippet"} if hit(c) else c for c in citations
        ]
    if isinstance(retrieved, list):
        retrieved = [r for r in retrieved if not hit(r)] or None
    return citations, retrieved


def forget_knowledge_txn(
    conn: sqlite3.Connection, *, bot_id: str | None = None, document_id: str | None = None
) -> int:
    """Erase knowledge text kept in transcripts (issue 13: a deleted document or bot leaves
    no text of it in the database): the retrieved chunks and citation snippets of every
    turn of ``bot_id``'s conversations, or of every turn that used ``document_id``.
    Markers, document ids and scores stay. Returns the number of turns rewritten."""
    if bot_id is not None:
        rows = conn.execute(
            "SELECT m.seq, m.citations, m.retrieved FROM scaibot_messages m"
            " JOIN scaibot_conversations c ON c.conversation_id = m.conversation_id"
            " WHERE c.bot_id = ? AND (m.citations IS NOT NULL OR m.retrieved IS NOT NULL)",
            (bot_id,),
        ).fetchall()
        target = None
    elif document_id is not None:
        like = f'%"{document_id}"%'
        rows = conn.execute(
            "SELECT seq, citations, retrieved FROM scaibot_messages"
            " WHERE citations LIKE ? OR retrieved LIKE ?",
            (like, like),
        ).fetchall()
        target = document_id
    else:
        raise ValueError("forget_knowledge_txn needs bot_id or document_id")
    for row in rows:
        citations, retrieved = _without_knowledge(
            _load(row["citations"]), _load(row["retrieved"]), target
        )
        conn.execute(
            "UPDATE scaibot_messages SET citations = ?, retrieved = ? WHERE seq = ?",
            (_json(citations), _json(retrieved), row["seq"]),
        )
    return len(rows)
