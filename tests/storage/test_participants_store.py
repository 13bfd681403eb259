"""Participants, tokens and API keys: only hashes of secrets are ever stored."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from protocol import ids
from storage import participants as pstore
from storage.db import atomic
from storage.errors import Conflict

HOUR = 3_600_000

_clock = itertools.count(1_700_000_000_000)


def now_ms() -> int:
    return next(_clock)


def participant(conn: sqlite3.Connection, name: str) -> str:
    pid = f"p-{name}"
    with atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id=pid,
            username=name,
            display_name=name.title(),
            participant_type="human",
            password_hash=None,
            is_admin=False,
            now_ms=now_ms(),
        )
    return pid


def _all_values(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(v) for row in conn.execute(f"SELECT * FROM {table}") for v in tuple(row)]


def _store(
    conn: sqlite3.Connection, secret: str, pid: str, kind: str, family: str, ttl: int = HOUR
) -> None:
    t = now_ms()
    with atomic(conn):
        pstore.store_token_txn(
            conn,
            secret=secret,
            participant_id=pid,
            kind=kind,
            family_id=family,
            now_ms=t,
            expires_at_ms=t + ttl,
        )


def test_create_and_read_participant(conn: sqlite3.Connection) -> None:
    with atomic(conn):
        made = pstore.create_participant_txn(
            conn,
            participant_id="ai-bot1",
            username="bot1",
            display_name="Bot One",
            participant_type="bot",
            password_hash="argon2-not-really",
            is_admin=True,
            now_ms=123,
        )
    assert made.participant_id == "ai-bot1"
    assert made.is_admin is True
    assert made.participant_type == "bot"
    assert made.created_at_ms == 123
    assert pstore.get_participant(conn, "ai-bot1") == made
    assert pstore.get_participant_by_username(conn, "bot1") == made
    assert pstore.get_participant(conn, "ai-missing") is None
    assert pstore.get_participant_by_username(conn, "missing") is None
    other = participant(conn, "alice")
    found = pstore.get_participants(conn, ["ai-bot1", other, "p-ghost"])
    assert set(found) == {"ai-bot1", other}


def test_duplicate_username_is_a_conflict(conn: sqlite3.Connection) -> None:
    participant(conn, "alice")
    with pytest.raises(Conflict), atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id="p-alice-2",
            username="alice",
            display_name="Another Alice",
            participant_type="human",
            password_hash=None,
            is_admin=False,
            now_ms=now_ms(),
        )
    assert not conn.in_transaction
    assert pstore.get_participant(conn, "p-alice-2") is None
    assert conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 1


def test_participants_without_username_do_not_conflict(conn: sqlite3.Connection) -> None:
    for n in range(2):
        with atomic(conn):
            pstore.create_participant_txn(
                conn,
                participant_id=f"ai-model{n}",
                username=None,
                display_name="Model",
                participant_type="model",
                password_hash=None,
                is_admin=False,
                now_ms=now_ms(),
            )
    assert conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 2


def test_unknown_participant_type_is_rejected(conn: sqlite3.Connection) -> None:
    with pytest.raises((sqlite3.IntegrityError, Conflict)), atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id="p-x",
            username="x",
            display_name="X",
            participant_type="robot",
            password_hash=None,
            is_admin=False,
            now_ms=now_ms(),
        )
    assert pstore.get_participant(conn, "p-x") is None


def test_update_profile(conn: sqlite3.Connection) -> None:
    pid = participant(conn, "alice")
    with atomic(conn):
        pstore.update_profile_txn(conn, pid, {"display_name": "Al", "bio": None})
    found = pstore.get_participant(conn, pid)
    assert found is not None
    assert found.display_name == "Al"
    with pytest.raises(ValueError, match="not a profile field"), atomic(conn):
        pstore.update_profile_txn(conn, pid, {"is_admin": "1"})


def test_tokens_are_found_by_secret_and_stored_only_hashed(conn: sqlite3.Connection) -> None:
    pid = participant(conn, "alice")
    access = ids.secret_token(ids.ACCESS_TOKEN)
    refresh = ids.secret_token(ids.REFRESH_TOKEN)
    _store(conn, access, pid, "access", "fam-1")
    _store(conn, refresh, pid, "refresh", "fam-1")

    got = pstore.lookup_token(conn, access)
    assert got is not None
    assert (got.participant_id, got.kind, got.family_id, got.revoked) == (
        pid,
        "access",
        "fam-1",
        False,
    )
    got_refresh = pstore.lookup_token(conn, refresh)
    assert got_refresh is not None
    assert got_refresh.kind == "refresh"
    assert pstore.lookup_token(conn, ids.secret_token(ids.ACCESS_TOKEN)) is None
    assert pstore.lookup_token(conn, "") is None

    stored = _all_values(conn, "tokens")
    for secret in (access, refresh):
        assert not any(secret in value for value in stored)
        assert pstore.secret_hash(secret) in stored


def test_revoke_one_token(conn: sqlite3.Connection) -> None:
    pid = participant(conn, "alice")
    a, b = ids.secret_token(ids.ACCESS_TOKEN), ids.secret_token(ids.ACCESS_TOKEN)
    _store(conn, a, pid, "access", "fam-1")
    _store(conn, b, pid, "access", "fam-1")
    with atomic(conn):
        pstore.revoke_token_txn(conn, a)
    info_a, info_b = pstore.lookup_token(conn, a), pstore.lookup_token(conn, b)
    assert info_a is not None
    assert info_a.revoked
    assert info_b is not None
    assert not info_b.revoked


def test_revoke_family_revokes_only_that_family(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    fam1 = [ids.secret_token(ids.REFRESH_TOKEN) for _ in range(3)]
    fam2 = [ids.secret_token(ids.REFRESH_TOKEN) for _ in range(2)]
    for s in fam1:
        _store(conn, s, alice, "refresh", "fam-1")
    for s in fam2:
        _store(conn, s, bob, "refresh", "fam-2")
    with atomic(conn):
        pstore.revoke_family_txn(conn, "fam-1")
    for s in fam1:
        info = pstore.lookup_token(conn, s)
        assert info is not None
        assert info.revoked
    for s in fam2:
        info = pstore.lookup_token(conn, s)
        assert info is not None
        assert not info.revoked


def test_expired_tokens_are_deleted(conn: sqlite3.Connection) -> None:
    pid = participant(conn, "alice")
    old, fresh = ids.secret_token(ids.ACCESS_TOKEN), ids.secret_token(ids.ACCESS_TOKEN)
    _store(conn, old, pid, "access", "f", ttl=-1)
    _store(conn, fresh, pid, "access", "f", ttl=HOUR)
    with atomic(conn):
        assert pstore.delete_expired_tokens_txn(conn, now_ms()) == 1
    assert pstore.lookup_token(conn, old) is None
    assert pstore.lookup_token(conn, fresh) is not None


def _key(conn: sqlite3.Connection, pid: str, name: str) -> tuple[pstore.ApiKey, str]:
    secret = ids.secret_token(ids.API_KEY)
    with atomic(conn):
        key = pstore.create_api_key_txn(
            conn,
            key_id=ids.random_id(ids.API_KEY_ID),
            secret=secret,
            participant_id=pid,
            name=name,
            now_ms=now_ms(),
            expires_at_ms=None,
        )
    return key, secret


def test_api_keys_create_list_lookup_revoke(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    k1, s1 = _key(conn, alice, "first")
    k2, s2 = _key(conn, alice, "second")
    kb, sb = _key(conn, bob, "bobs")
    assert s1.startswith("swk_")
    assert len(s1) >= 36
    assert k1.prefix == s1[:8]
    assert k1.participant_id == alice
    assert k1.name == "first"
    assert k1.revoked_at_ms is None

    assert [k.key_id for k in pstore.list_api_keys(conn, alice)] == [k1.key_id, k2.key_id]
    assert [k.key_id for k in pstore.list_api_keys(conn, bob)] == [kb.key_id]
    assert pstore.lookup_api_key(conn, s2) == k2
    assert pstore.lookup_api_key(conn, ids.secret_token(ids.API_KEY)) is None

    stored = _all_values(conn, "api_keys")
    for secret in (s1, s2, sb):
        assert not any(secret in value for value in stored)
        assert pstore.secret_hash(secret) in stored

    with atomic(conn):
        # Someone else's key cannot be revoked by id alone.
        assert not pstore.revoke_api_key_txn(
            conn, key_id=k1.key_id, participant_id=bob, now_ms=now_ms()
        )
        assert pstore.revoke_api_key_txn(
            conn, key_id=k1.key_id, participant_id=alice, now_ms=now_ms()
        )
        # Revoking twice reports nothing revoked.
        assert not pstore.revoke_api_key_txn(
            conn, key_id=k1.key_id, participant_id=alice, now_ms=now_ms()
        )
    assert [k.key_id for k in pstore.list_api_keys(conn, alice)] == [k2.key_id]
    revoked = pstore.lookup_api_key(conn, s1)
    assert revoked is not None
    assert revoked.revoked_at_ms is not None


def test_api_key_hashes_are_unique(conn: sqlite3.Connection) -> None:
    pid = participant(conn, "alice")
    secret = ids.secret_token(ids.API_KEY)

    def create(key_id: str) -> None:
        with atomic(conn):
            pstore.create_api_key_txn(
                conn,
                key_id=key_id,
                secret=secret,
                participant_id=pid,
                name="dup",
                now_ms=now_ms(),
                expires_at_ms=None,
            )

    create("key_a")
    with pytest.raises(sqlite3.IntegrityError):
        create("key_b")
    assert [k.key_id for k in pstore.list_api_keys(conn, pid)] == ["key_a"]
