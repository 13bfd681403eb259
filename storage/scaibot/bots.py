"""Bots, their tone, escalation rules and embed-token rows (migration scaibot)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from protocol.knowledge import parse_knowledge_settings
from protocol.scaibot.bots import BotConfig
from protocol.scaibot.escalation import Rule, RuleSpec
from protocol.scaibot.tone import Tone, parse_tone
from storage.errors import Conflict
from storage.scaibot.conversations import forget_knowledge_txn


@dataclass(frozen=True, slots=True)
class StoredBot:
    seq: int
    bot_id: str
    tenant_id: str
    creator_id: str
    collection_id: str
    config: BotConfig
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class StoredRule:
    rule: Rule
    bot_id: str
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class EmbedTokenRow:
    token_id: str
    bot_id: str
    visitor_id: str
    visitor_email: str | None
    visitor_name: str | None
    metadata: Any
    expires_at_ms: int
    revoked_at_ms: int | None


_BOT_COLS = (
    "name, slug, model, display_name, welcome_message, placeholder_text, primary_color, "
    "max_tokens_per_response, max_context_messages, knowledge_enabled, knowledge_mode, "
    "knowledge_collection_id, knowledge_settings, status"
)


def _config_values(c: BotConfig) -> tuple[Any, ...]:
    return (
        c.name,
        c.slug,
        c.model,
        c.display_name,
        c.welcome_message,
        c.placeholder_text,
        c.primary_color,
        c.max_tokens_per_response,
        c.max_context_messages,
        int(c.knowledge_enabled),
        c.knowledge_mode,
        c.knowledge_collection_id,
        json.dumps(c.knowledge_settings.to_dict()),
        c.status,
    )


def _bot(row: sqlite3.Row) -> StoredBot:
    config = BotConfig(
        name=row["name"],
        slug=row["slug"],
        model=row["model"],
        display_name=row["display_name"],
        welcome_message=row["welcome_message"],
        placeholder_text=row["placeholder_text"],
        primary_color=row["primary_color"],
        max_tokens_per_response=row["max_tokens_per_response"],
        max_context_messages=row["max_context_messages"],
        knowledge_enabled=bool(row["knowledge_enabled"]),
        knowledge_mode=row["knowledge_mode"],
        knowledge_collection_id=row["knowledge_collection_id"],
        knowledge_settings=parse_knowledge_settings(json.loads(row["knowledge_settings"])),
        status=row["status"],
    )
    return StoredBot(
        row["seq"],
        row["bot_id"],
        row["tenant_id"],
        row["creator_id"],
        row["collection_id"],
        config,
        row["created_at_ms"],
        row["updated_at_ms"],
    )


def create_bot_txn(
    conn: sqlite3.Connection,
    *,
    bot_id: str,
    tenant_id: str,
    creator_id: str,
    collection_id: str,
    config: BotConfig,
    now_ms: int,
) -> StoredBot:
    try:
        conn.execute(
            f"INSERT INTO scaibot_bots (bot_id, tenant_id, creator_id, collection_id, {_BOT_COLS},"
            " created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, " + ", ".join("?" * 14) + ", ?, ?)",
            (bot_id, tenant_id, creator_id, collection_id, *_config_values(config), now_ms, now_ms),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict("slug") from exc
    found = get_bot(conn, bot_id)
    assert found is not None
    return found


def replace_bot_txn(
    conn: sqlite3.Connection, bot_id: str, config: BotConfig, now_ms: int
) -> StoredBot | None:
    sets = ", ".join(f"{col.strip()} = ?" for col in _BOT_COLS.split(","))
    try:
        cur = conn.execute(
            f"UPDATE scaibot_bots SET {sets}, updated_at_ms = ? WHERE bot_id = ?",
            (*_config_values(config), now_ms, bot_id),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict("slug") from exc
    return get_bot(conn, bot_id) if cur.rowcount else None


def get_bot(conn: sqlite3.Connection, bot_id: str) -> StoredBot | None:
    row = conn.execute("SELECT * FROM scaibot_bots WHERE bot_id = ?", (bot_id,)).fetchone()
    return None if row is None else _bot(row)


def collection_in_tenant(conn: sqlite3.Connection, tenant_id: str, collection_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM scaibot_bots WHERE tenant_id = ? AND collection_id = ?",
        (tenant_id, collection_id),
    ).fetchone()
    return row is not None


def list_bots(
    conn: sqlite3.Connection, tenant_id: str, status: str | None, after_seq: int, limit: int
) -> list[StoredBot]:
    sql = "SELECT * FROM scaibot_bots WHERE tenant_id = ? AND seq > ?"
    args: list[Any] = [tenant_id, after_seq]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
    return [_bot(r) for r in rows]


def set_status_txn(conn: sqlite3.Connection, bot_id: str, status: str, now_ms: int) -> None:
    conn.execute(
        "UPDATE scaibot_bots SET status = ?, updated_at_ms = ? WHERE bot_id = ?",
        (status, now_ms, bot_id),
    )


def delete_bot_txn(conn: sqlite3.Connection, bot_id: str) -> None:
    """Anonymise the bot's conversations and erase the knowledge text their transcripts
    kept; its tone, rules and token rows go with it."""
    forget_knowledge_txn(conn, bot_id=bot_id)
    conn.execute(
        "UPDATE scaibot_conversations SET visitor_id = NULL, visitor_email = NULL, "
        "visitor_name = NULL, metadata = NULL WHERE bot_id = ?",
        (bot_id,),
    )
    conn.execute("DELETE FROM scaibot_bots WHERE bot_id = ?", (bot_id,))


# --------------------------------------------------------------------------- tone


def get_tone(conn: sqlite3.Connection, bot_id: str) -> Tone:
    row = conn.execute("SELECT tone FROM scaibot_tones WHERE bot_id = ?", (bot_id,)).fetchone()
    return Tone() if row is None else parse_tone(json.loads(row["tone"]))


def put_tone_txn(conn: sqlite3.Connection, bot_id: str, tone: Tone, now_ms: int) -> None:
    conn.execute(
        "INSERT INTO scaibot_tones (bot_id, tone, updated_at_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (bot_id) DO UPDATE SET tone = excluded.tone, "
        "updated_at_ms = excluded.updated_at_ms",
        (bot_id, json.dumps(tone.to_dict()), now_ms),
    )


# --------------------------------------------------------------------------- rules


def _rule(row: sqlite3.Row) -> StoredRule:
    spec = RuleSpec(
        name=row["name"],
        priority=row["priority"],
        trigger_type=row["trigger_type"],
        trigger_config=json.loads(row["trigger_config"]),
        action_type=row["action_type"],
        action_config=json.loads(row["action_config"]),
        message=row["message"],
    )
    rule = Rule(row["rule_id"], row["priority"], row["seq"], spec)
    return StoredRule(rule, row["bot_id"], row["created_at_ms"], row["updated_at_ms"])


def _spec_values(spec: RuleSpec) -> tuple[Any, ...]:
    return (
        spec.name,
        spec.priority,
        spec.trigger_type,
        json.dumps(spec.trigger_config),
        spec.action_type,
        json.dumps(spec.action_config),
        spec.message,
    )


def create_rule_txn(
    conn: sqlite3.Connection, rule_id: str, bot_id: str, spec: RuleSpec, now_ms: int
) -> StoredRule:
    conn.execute(
        "INSERT INTO scaibot_rules (rule_id, bot_id, name, priority, trigger_type, "
        "trigger_config, action_type, action_config, message, created_at_ms, updated_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (rule_id, bot_id, *_spec_values(spec), now_ms, now_ms),
    )
    found = get_rule(conn, bot_id, rule_id)
    assert found is not None
    return found


def replace_rule_txn(
    conn: sqlite3.Connection, bot_id: str, rule_id: str, spec: RuleSpec, now_ms: int
) -> StoredRule | None:
    conn.execute(
        "UPDATE scaibot_rules SET name = ?, priority = ?, trigger_type = ?, trigger_config = ?, "
        "action_type = ?, action_config = ?, message = ?, updated_at_ms = ? "
        "WHERE bot_id = ? AND rule_id = ?",
        (*_spec_values(spec), now_ms, bot_id, rule_id),
    )
    return get_rule(conn, bot_id, rule_id)


def delete_rule_txn(conn: sqlite3.Connection, bot_id: str, rule_id: str) -> bool:
    cur = conn.execute(
        "DELETE FROM scaibot_rules WHERE bot_id = ? AND rule_id = ?", (bot_id, rule_id)
    )
    return cur.rowcount > 0


def get_rule(conn: sqlite3.Connection, bot_id: str, rule_id: str) -> StoredRule | None:
    row = conn.execute(
        "SELECT * FROM scaibot_rules WHERE bot_id = ? AND rule_id = ?", (bot_id, rule_id)
    ).fetchone()
    return None if row is None else _rule(row)


def list_rules(conn: sqlite3.Connection, bot_id: str) -> list[StoredRule]:
    rows = conn.execute(
        "SELECT * FROM scaibot_rules WHERE bot_id = ? ORDER BY priority DESC, seq", (bot_id,)
    ).fetchall()
    return [_rule(r) for r in rows]


def set_priorities_txn(
    conn: sqlite3.Connection, bot_id: str, priorities: dict[str, int], now_ms: int
) -> None:
    conn.executemany(
        "UPDATE scaibot_rules SET priority = ?, updated_at_ms = ? WHERE bot_id = ? AND rule_id = ?",
        [(p, now_ms, bot_id, rid) for rid, p in priorities.items()],
    )


# --------------------------------------------------------------------------- embed tokens


def create_token_txn(conn: sqlite3.Connection, row: EmbedTokenRow, now_ms: int) -> None:
    conn.execute(
        "INSERT INTO scaibot_embed_tokens (token_id, bot_id, visitor_id, visitor_email, "
        "visitor_name, metadata, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.token_id,
            row.bot_id,
            row.visitor_id,
            row.visitor_email,
            row.visitor_name,
            None if row.metadata is None else json.dumps(row.metadata),
            now_ms,
            row.expires_at_ms,
        ),
    )


def get_token(conn: sqlite3.Connection, token_id: str) -> EmbedTokenRow | None:
    row = conn.execute(
        "SELECT * FROM scaibot_embed_tokens WHERE token_id = ?", (token_id,)
    ).fetchone()
    if row is None:
        return None
    return EmbedTokenRow(
        row["token_id"],
        row["bot_id"],
        row["visitor_id"],
        row["visitor_email"],
        row["visitor_name"],
        None if row["metadata"] is None else json.loads(row["metadata"]),
        row["expires_at_ms"],
        row["revoked_at_ms"],
    )


def revoke_token_txn(conn: sqlite3.Connection, bot_id: str, token_id: str, now_ms: int) -> bool:
    cur = conn.execute(
        "UPDATE scaibot_embed_tokens SET revoked_at_ms = COALESCE(revoked_at_ms, ?) "
        "WHERE token_id = ? AND bot_id = ?",
        (now_ms, token_id, bot_id),
    )
    return cur.rowcount > 0


def delete_expired_tokens_txn(conn: sqlite3.Connection, now_ms: int) -> int:
    cur = conn.execute("DELETE FROM scaibot_embed_tokens WHERE expires_at_ms <= ?", (now_ms,))
    return cur.rowcount
