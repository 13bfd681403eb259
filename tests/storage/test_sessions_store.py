"""storage/sessions.py: the token-bounded history read and the soft/hard delete."""

from __future__ import annotations

import sqlite3

import pytest

from protocol.context import Counted, prompt_cost
from protocol.llm import ChatMessage
from storage import participants as pstore
from storage import sessions as store
from storage.db import atomic
from storage.errors import NotFound


def _seed(conn: sqlite3.Connection, contents: list[str]) -> None:
    with atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id="p-1",
            username="u",
            display_name="u",
            participant_type="human",
            password_hash=None,
            is_admin=False,
            now_ms=1,
        )
        store.create_session_txn(
            conn,
            session_id="sess_1",
            tenant_id="ten_default",
            owner_id="p-1",
            model="m",
            title=None,
            system_prompt=None,
            metadata={},
            now_ms=1,
            max_per_owner=5,
        )
        for i, text in enumerate(contents):
            store.add_user_message_txn(
                conn,
                session_id="sess_1",
                message_id=f"msg_u{i}",
                content=text,
                tokens=len(text),
                reply_id=f"msg_a{i}",
                now_ms=2 + i,
            )
            store.add_reply_txn(conn, "sess_1", store.NewReply(f"msg_a{i}", "", "error", 0, 0, 3))


def test_recent_messages_stops_where_the_budget_is_spent(conn: sqlite3.Connection) -> None:
    _seed(conn, ["a" * 10, "b" * 20, "c" * 30])
    everything = store.recent_messages(conn, "sess_1", 100)
    assert [m.message_id for m in everything] == [
        "msg_u0", "msg_a0", "msg_u1", "msg_a1", "msg_u2", "msg_a2"
    ]  # fmt: skip
    for budget in range(80):
        kept = store.recent_messages(conn, "sess_1", 100, budget)
        counted = [Counted(ChatMessage("user", m.content), m.tokens) for m in kept if m.content]
        assert prompt_cost(None, counted) <= budget
        older = everything[: len(everything) - len(kept)]
        if any(m.content for m in older):
            nxt = next(m for m in reversed(older) if m.content)
            with_next = [Counted(ChatMessage("user", nxt.content), nxt.tokens), *counted]
            assert prompt_cost(None, with_next) > budget  # nothing that fits is left out
    assert [m.message_id for m in store.recent_messages(conn, "sess_1", 2)] == [
        "msg_u2", "msg_a2"
    ]  # fmt: skip


def test_soft_delete_then_purge(conn: sqlite3.Connection) -> None:
    _seed(conn, ["x"])
    with atomic(conn):
        store.soft_delete_txn(conn, "sess_1", "p-1", 9)
    found = store.get_session(conn, "sess_1")
    assert found is not None
    assert found.deleted_at_ms == 9
    assert store.count_owned(conn, "p-1") == 0
    with pytest.raises(NotFound), atomic(conn):
        store.soft_delete_txn(conn, "sess_1", "p-1", 10)
    with atomic(conn):
        assert store.purge_session_txn(conn, "sess_1") == 2
    assert store.get_session(conn, "sess_1") is None
    assert store.list_messages(conn, "sess_1") == []


def test_interrupted_replies_are_closed(conn: sqlite3.Connection) -> None:
    _seed(conn, [])
    with atomic(conn):
        store.add_user_message_txn(
            conn,
            session_id="sess_1",
            message_id="msg_u",
            content="hi",
            tokens=1,
            reply_id="msg_r",
            now_ms=5,
        )
    assert store.get_session(conn, "sess_1").generating_message_id == "msg_r"  # type: ignore[union-attr]
    with atomic(conn):
        assert store.close_interrupted_txn(conn, 6) == 1
        assert store.close_interrupted_txn(conn, 7) == 0
    found = store.get_session(conn, "sess_1")
    assert found is not None
    assert found.generating_message_id is None
    assert found.message_count == 2
    reply = store.get_message(conn, "msg_r")
    assert reply is not None
    assert (reply.role, reply.content, reply.finish_reason) == ("assistant", "", "error")
