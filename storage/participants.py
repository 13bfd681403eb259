"""Participants, tokens and API keys. Secrets are stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from storage.errors import Conflict

DEFAULT_TENANT = "ten_default"
ALL_SCOPES = ("*",)


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    username: str | None
    display_name: str
    participant_type: str
    is_admin: bool
    avatar_url: str | None
    bio: str | None
    created_at_ms: int
    password_hash: str | None
    tenant_id: str = DEFAULT_TENANT
    deactivated_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    participant_id: str
    kind: str
    family_id: str
    expires_at_ms: int | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    participant_id: str
    name: str
    prefix: str
    created_at_ms: int
    expires_at_ms: int | None
    revoked_at_ms: int | None
    scopes: tuple[str, ...] = ALL_SCOPES


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _participant(row: sqlite3.Row) -> Participant:
    return Participant(
        participant_id=row["participant_id"],
        username=row["username"],
        display_name=row["display_name"],
        participant_type=row["participant_type"],
        is_admin=bool(row["is_admin"]),
        avatar_url=row["avatar_url"],
        bio=row["bio"],
        created_at_ms=row["created_at_ms"],
        password_hash=row["password_hash"],
        tenant_id=row["tenant_id"],
        deactivated_at_ms=row["deactivated_at_ms"],
    )


def create_participant_txn(
    conn: sqlite3.Connection,
    *,
    participant_id: str,
    username: str | None,
    display_name: str,
    participant_type: str,
    password_hash: str | None,
    is_admin: bool,
    now_ms: int,
    tenant_id: str = DEFAULT_TENANT,
) -> Participant:
    try:
        conn.execute(
            "INSERT INTO participants (participant_id, username, display_name, participant_type,"
            " password_hash, is_admin, created_at_ms, tenant_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                participant_id,
                username,
                display_name,
                participant_type,
                password_hash,
                int(is_admin),
                now_ms,
                tenant_id,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"username {username!r} is taken") from exc
    found = get_participant(conn, participant_id)
    assert found is not None
    return found


def get_participant(conn: sqlite3.Connection, participant_id: str) -> Participant | None:
    row = conn.execute(
        "SELECT * FROM participants WHERE participant_id = ?", (participant_id,)
    ).fetchone()
    return None if row is None else _participant(row)


def get_participants(conn: sqlite3.Connection, ids: list[str]) -> dict[str, Participant]:
    found: dict[str, Participant] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT * FROM participants WHERE participant_id IN ({marks})", chunk
        ):
            found[row["participant_id"]] = _participant(row)
    return found


def count_participants(conn: sqlite3.Connection, tenant_id: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM participants WHERE tenant_id = ?", (tenant_id,)
    ).fetchone()
    return int(row[0])


def get_participant_by_username(conn: sqlite3.Connection, username: str) -> Participant | None:
    row = conn.execute("SELECT * FROM participants WHERE username = ?", (username,)).fetchone()
    return None if row is None else _participant(row)


def update_profile_txn(
    conn: sqlite3.Connection, participant_id: str, changes: dict[str, str | None]
) -> None:
    allowed = {"display_name", "avatar_url", "bio"}
    for key, value in changes.items():
        if key not in allowed:
            raise ValueError(f"not a profile field: {key}")
        conn.execute(
            f"UPDATE participants SET {key} = ? WHERE participant_id = ?", (value, participant_id)
        )


def store_token_txn(
    conn: sqlite3.Connection,
    *,
    secret: str,
    participant_id: str,
    kind: str,
    family_id: str,
    now_ms: int,
    expires_at_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO tokens (token_hash, participant_id, kind, family_id, created_at_ms,"
        " expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (secret_hash(secret), participant_id, kind, family_id, now_ms, expires_at_ms),
    )


def lookup_token(conn: sqlite3.Connection, secret: str) -> TokenInfo | None:
    row = conn.execute(
        "SELECT participant_id, kind, family_id, expires_at_ms, revoked FROM tokens"
        " WHERE token_hash = ?",
        (secret_hash(secret),),
    ).fetchone()
    if row is None:
        return None
    return TokenInfo(
        participant_id=row["participant_id"],
        kind=row["kind"],
        family_id=row["family_id"],
        expires_at_ms=row["expires_at_ms"],
        revoked=bool(row["revoked"]),
    )


def revoke_token_txn(conn: sqlite3.Connection, secret: str) -> None:
    conn.execute("UPDATE tokens SET revoked = 1 WHERE token_hash = ?", (secret_hash(secret),))


def revoke_family_txn(conn: sqlite3.Connection, family_id: str, now_ms: int = 0) -> None:
    """Revoke every token of a family (theft detection), and log it for open streams."""
    conn.execute("UPDATE tokens SET revoked = 1 WHERE family_id = ?", (family_id,))
    log_revocation_txn(conn, "family", family_id, now_ms)


def delete_expired_tokens_txn(conn: sqlite3.Connection, now_ms: int) -> int:
    cur = conn.execute("DELETE FROM tokens WHERE expires_at_ms < ?", (now_ms,))
    return cur.rowcount


def _api_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        participant_id=row["participant_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at_ms=row["created_at_ms"],
        expires_at_ms=row["expires_at_ms"],
        revoked_at_ms=row["revoked_at_ms"],
        scopes=tuple(json.loads(row["scopes"])),
    )


def create_api_key_txn(
    conn: sqlite3.Connection,
    *,
    key_id: str,
    secret: str,
    participant_id: str,
    name: str,
    now_ms: int,
    expires_at_ms: int | None,
    scopes: tuple[str, ...] = ALL_SCOPES,
) -> ApiKey:
    conn.execute(
        "INSERT INTO api_keys (key_id, key_hash, participant_id, name, prefix, created_at_ms,"
        " expires_at_ms, scopes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key_id,
            secret_hash(secret),
            participant_id,
            name,
            secret[:8],
            now_ms,
            expires_at_ms,
            json.dumps(list(scopes)),
        ),
    )
    row = conn.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    return _api_key(row)


def list_api_keys(conn: sqlite3.Connection, participant_id: str) -> list[ApiKey]:
    rows = conn.execute(
        "SELECT * FROM api_keys WHERE participant_id = ? AND revoked_at_ms IS NULL"
        " ORDER BY created_at_ms, key_id",
        (participant_id,),
    )
    return [_api_key(r) for r in rows]


def revoke_api_key_txn(
    conn: sqlite3.Connection, *, key_id: str, participant_id: str, now_ms: int
) -> bool:
    row = conn.execute(
        "UPDATE api_keys SET revoked_at_ms = ? WHERE key_id = ? AND participant_id = ?"
        " AND revoked_at_ms IS NULL RETURNING key_hash",
        (now_ms, key_id, participant_id),
    ).fetchone()
    if row is None:
        return False
    log_revocation_txn(conn, "credential", row["key_hash"], now_ms)
    return True


def lookup_api_key(conn: sqlite3.Connection, secret: str) -> ApiKey | None:
    row = conn.execute(
        "SELECT * FROM api_keys WHERE key_hash = ?", (secret_hash(secret),)
    ).fetchone()
    return None if row is None else _api_key(row)


# --------------------------------------------------------------------------- revocation


@dataclass(frozen=True, slots=True)
class CredentialState:
    """What a check of a live credential needs: is it revoked, when does it expire."""

    participant_id: str
    revoked: bool
    expires_at_ms: int | None


def credential_state(conn: sqlite3.Connection, token_hash: str, via: str) -> CredentialState | None:
    """One indexed lookup by secret hash: an access token, or an API key (``via``)."""
    if via == "api_key":
        row = conn.execute(
            "SELECT participant_id, revoked_at_ms IS NOT NULL AS revoked, expires_at_ms"
            " FROM api_keys WHERE key_hash = ?",
            (token_hash,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT participant_id, revoked, expires_at_ms FROM tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
    if row is None:
        return None
    return CredentialState(row["participant_id"], bool(row["revoked"]), row["expires_at_ms"])


REVOCATION_KINDS = ("credential", "family", "participant")
REVOCATION_LOG_KEEP_MS = 24 * 3600 * 1000


def log_revocation_txn(conn: sqlite3.Connection, kind: str, value: str, now_ms: int) -> None:
    """Append to the revocation log (read by the server to close open streams)."""
    if kind not in REVOCATION_KINDS:
        raise ValueError(f"not a revocation kind: {kind}")
    conn.execute(
        "INSERT INTO credential_revocations (kind, value, created_at_ms) VALUES (?, ?, ?)",
        (kind, value, now_ms),
    )
    if now_ms > REVOCATION_LOG_KEEP_MS:
        conn.execute(
            "DELETE FROM credential_revocations WHERE created_at_ms < ?",
            (now_ms - REVOCATION_LOG_KEEP_MS,),
        )


def last_revocation(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(seq) FROM credential_revocations").fetchone()
    return int(row[0] or 0)


def revocations_after(
    conn: sqlite3.Connection, seq: int, limit: int = 1000
) -> list[tuple[int, str, str]]:
    """(seq, kind, value) of revocations logged after ``seq``, oldest first."""
    rows = conn.execute(
        "SELECT seq, kind, value FROM credential_revocations WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit),
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def deactivate_participant_txn(conn: sqlite3.Connection, participant_id: str, now_ms: int) -> bool:
    """Deactivate a participant: no login, every token and API key revoked, logged.

    False if there is no such participant or it was already deactivated.
    """
    cur = conn.execute(
        "UPDATE participants SET deactivated_at_ms = ? WHERE participant_id = ?"
        " AND deactivated_at_ms IS NULL",
        (now_ms, participant_id),
    )
    if cur.rowcount != 1:
        return False
    conn.execute("UPDATE tokens SET revoked = 1 WHERE participant_id = ?", (participant_id,))
    conn.execute(
        "UPDATE api_keys SET revoked_at_ms = ? WHERE participant_id = ? AND revoked_at_ms IS NULL",
        (now_ms, participant_id),
    )
    log_revocation_txn(conn, "participant", participant_id, now_ms)
    return True
