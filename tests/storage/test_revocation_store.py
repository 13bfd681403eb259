"""The credential revocation log, live-credential checks and participant deactivation."""

from __future__ import annotations

import sqlite3

from protocol import ids
from storage import participants as pstore
from storage.db import atomic
from tests.storage.test_participants_store import _store, participant


def _key(conn: sqlite3.Connection, pid: str) -> tuple[str, str]:
    secret = ids.secret_token(ids.API_KEY)
    key_id = ids.random_id(ids.API_KEY_ID)
    with atomic(conn):
        pstore.create_api_key_txn(
            conn,
            key_id=key_id,
            secret=secret,
            participant_id=pid,
            name="k",
            now_ms=1,
            expires_at_ms=None,
        )
    return key_id, secret


def test_every_revocation_is_logged_in_order(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    key_id, secret = _key(conn, alice)
    start = pstore.last_revocation(conn)
    with atomic(conn):
        assert pstore.revoke_api_key_txn(conn, key_id=key_id, participant_id=alice, now_ms=5)
        assert not pstore.revoke_api_key_txn(conn, key_id=key_id, participant_id=alice, now_ms=6)
        pstore.revoke_family_txn(conn, "fam-1", 7)
        assert pstore.deactivate_participant_txn(conn, alice, 8)
        assert not pstore.deactivate_participant_txn(conn, alice, 9)
    logged = pstore.revocations_after(conn, start)
    assert [(kind, value) for _, kind, value in logged] == [
        ("credential", pstore.secret_hash(secret)),
        ("family", "fam-1"),
        ("participant", alice),
    ]
    assert pstore.revocations_after(conn, logged[-1][0]) == []
    assert pstore.last_revocation(conn) == logged[-1][0]


def test_credential_state_by_hash(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    access = ids.secret_token(ids.ACCESS_TOKEN)
    _store(conn, access, alice, "access", "fam-a")
    key_id, secret = _key(conn, alice)
    token = pstore.credential_state(conn, pstore.secret_hash(access), "access")
    assert token is not None
    assert (token.participant_id, token.revoked) == (alice, False)
    key = pstore.credential_state(conn, pstore.secret_hash(secret), "api_key")
    assert key is not None
    assert not key.revoked
    assert pstore.credential_state(conn, pstore.secret_hash("nope"), "access") is None
    # an API key's hash is not an access token, and the other way round
    assert pstore.credential_state(conn, pstore.secret_hash(secret), "access") is None
    with atomic(conn):
        pstore.revoke_api_key_txn(conn, key_id=key_id, participant_id=alice, now_ms=2)
    key = pstore.credential_state(conn, pstore.secret_hash(secret), "api_key")
    assert key is not None
    assert key.revoked


def test_deactivation_revokes_every_token_and_key_of_that_participant(
    conn: sqlite3.Connection,
) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    tokens = {pid: ids.secret_token(ids.ACCESS_TOKEN) for pid in (alice, bob)}
    for pid, secret in tokens.items():
        _store(conn, secret, pid, "access", f"fam-{pid}")
    keys = {pid: _key(conn, pid)[1] for pid in (alice, bob)}
    with atomic(conn):
        assert pstore.deactivate_participant_txn(conn, alice, 10)
    found = pstore.get_participant(conn, alice)
    assert found is not None
    assert found.deactivated_at_ms == 10
    for pid, revoked in ((alice, True), (bob, False)):
        token = pstore.credential_state(conn, pstore.secret_hash(tokens[pid]), "access")
        key = pstore.credential_state(conn, pstore.secret_hash(keys[pid]), "api_key")
        assert token is not None
        assert key is not None
        assert (token.revoked, key.revoked) == (revoked, revoked)
    assert not pstore.deactivate_participant_txn(conn, "p-nobody", 11)
