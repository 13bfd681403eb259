"""Registration, password and refresh grants, API keys, bearer authentication.

Passwords are hashed with argon2id (argon2-cffi) in a worker thread, so a
login never stalls the event loop. Tokens and keys are random 256-bit secrets
stored as SHA-256 hashes. Refresh tokens rotate; presenting a refresh token
that was already used revokes its whole family (theft detection).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from homeserver.clock import WallClock
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from storage import participants as pstore
from storage.errors import Conflict

_HASHER = PasswordHasher()
# A real hash to verify against when the user does not exist, so the time a
# failed login takes does not reveal whether a username is registered.
_DUMMY_HASH = _HASHER.hash("not-a-password")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


SCOPE_MODELS_USE = "models:use"
ALL_SCOPES: frozenset[str] = frozenset({"*"})


@dataclass(frozen=True, slots=True)
class Principal:
    participant_id: str
    token_key: str  # SHA-256 of the bearer secret
    via: str  # "access" or "api_key"
    participant_type: str = "human"
    tenant_id: str = pstore.DEFAULT_TENANT
    # Passwords and refresh tokens carry "*"; API keys carry what they were given.
    scopes: frozenset[str] = ALL_SCOPES
    is_admin: bool = False  # an admin of its tenant

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def require_scope(self, scope: str) -> None:
        """403 ``AUTH_INSUFFICIENT_SCOPE`` unless this credential carries ``scope``."""
        if not self.has_scope(scope):
            raise ApiError(
                ErrorCode.AUTH_INSUFFICIENT_SCOPE, f"this credential lacks the scope {scope!r}"
            )

    # For closing open streams on revocation and expiry (issue 9). New fields
    # go at the end, with defaults.
    family_id: str | None = None  # the refresh family of an access token
    expires_at_ms: int | None = None  # when the token or key stops working


@dataclass(frozen=True, slots=True)
class TokenPair:
    participant_id: str
    access_token: str
    refresh_token: str
    expires_in: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "token_type": "bearer",
        }


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _invalid_token() -> ApiError:
    return ApiError(ErrorCode.SW_AUTH_INVALID_TOKEN, "the bearer token is invalid or expired")


AUTH_FAILURES = frozenset({ErrorCode.SW_AUTH_INVALID_TOKEN, ErrorCode.SW_AUTH_EXPIRED_TOKEN})


def check_credential_txn(conn: sqlite3.Connection, principal: Principal, now_ms: int) -> None:
    """Refuse unless the principal's credential is still live (one indexed lookup).

    Run inside the transaction that acts for a long-lived connection (a stream
    ``send``), so an action ordered after a revocation commits is refused.
    """
    state = pstore.credential_state(conn, principal.token_key, principal.via)
    if state is None or state.revoked or state.participant_id != principal.participant_id:
        raise ApiError(ErrorCode.SW_AUTH_INVALID_TOKEN, "the credential was revoked")
    if state.expires_at_ms is not None and state.expires_at_ms <= now_ms:
        raise ApiError(ErrorCode.SW_AUTH_EXPIRED_TOKEN, "the credential has expired")


def _issue_pair_txn(
    conn: sqlite3.Connection,
    participant_id: str,
    family_id: str,
    now_ms: int,
    access_ttl: int,
    refresh_ttl: int,
) -> TokenPair:
    access = ids.secret_token(ids.ACCESS_TOKEN)
    refresh = ids.secret_token(ids.REFRESH_TOKEN)
    pstore.store_token_txn(
        conn,
        secret=access,
        participant_id=participant_id,
        kind="access",
        family_id=family_id,
        now_ms=now_ms,
        expires_at_ms=now_ms + access_ttl * 1000,
    )
    pstore.store_token_txn(
        conn,
        secret=refresh,
        participant_id=participant_id,
        kind="refresh",
        family_id=family_id,
        now_ms=now_ms,
        expires_at_ms=now_ms + refresh_ttl * 1000,
    )
    return TokenPair(participant_id, access, refresh, access_ttl)


class AuthService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        *,
        registration_enabled: bool,
        access_ttl: int,
        refresh_ttl: int,
        tenant_id: str = pstore.DEFAULT_TENANT,
        first_registrant_admin: bool = False,
    ) -> None:
        self._tenant_id = tenant_id
        self._first_admin = first_registrant_admin
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._registration = registration_enabled
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        # Told after a revocation commits (the revocation watcher reads the log).
        self.on_revoked: Callable[[], None] = lambda: None

    async def register(self, username: str, password: str, display_name: str | None) -> TokenPair:
        if not self._registration:
            raise ApiError(
                ErrorCode.SW_AUTH_REGISTRATION_DISABLED,
                "registration is disabled on this server (start it with --dev or set "
                "registration_enabled)",
            )
        name = username.strip().lower()
        if not ids.USERNAME_RE.match(name):
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM,
                "username: 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter "
                "or digit",
            )
        check_password(password)
        hashed = await trio.to_thread.run_sync(hash_password, password)
        pid = ids.participant_id("human")
        try:
            return await self._writer.write(
                self._register_txn, pid, name, display_name or name, hashed, self._clock()
            )
        except Conflict as exc:
            raise ApiError(ErrorCode.SW_USERNAME_TAKEN, "username: already taken") from exc

    def _register_txn(
        self, conn: sqlite3.Connection, pid: str, name: str, display: str, hashed: str, now: int
    ) -> TokenPair:
        # In dev mode the first participant of the tenant becomes its admin
        # (decided inside the write, so two racing registrations make one admin).
        first = self._first_admin and pstore.count_participants(conn, self._tenant_id) == 0
        pstore.create_participant_txn(
            conn,
            participant_id=pid,
            username=name,
            display_name=display,
            participant_type="human",
            password_hash=hashed,
            is_admin=first,
            now_ms=now,
            tenant_id=self._tenant_id,
        )
        return _issue_pair_txn(
            conn, pid, ids.random_id("fam_"), now, self._access_ttl, self._refresh_ttl
        )

    async def password_grant(self, username: str, password: str) -> TokenPair:
        found = await self._readers.read(pstore.get_participant_by_username, username.lower())
        stored = found.password_hash if found is not None else None
        ok = await trio.to_thread.run_sync(verify_password, stored, password)
        if not ok or found is None or found.deactivated_at_ms is not None:
            raise ApiError(ErrorCode.SW_AUTH_INVALID_CREDENTIALS, "wrong username or password")
        return await self._writer.write(
            _issue_pair_txn,
            found.participant_id,
            ids.random_id("fam_"),
            self._clock(),
            self._access_ttl,
            self._refresh_ttl,
        )

    async def refresh_grant(self, refresh_token: str) -> TokenPair:
        pair = await self._writer.write(self._refresh_txn, refresh_token, self._clock())
        if pair is None:
            self.on_revoked()
            raise _invalid_token()
        return pair

    def _refresh_txn(self, conn: sqlite3.Connection, secret: str, now: int) -> TokenPair | None:
        info = pstore.lookup_token(conn, secret)
        if info is None or info.kind != "refresh":
            raise _invalid_token()
        if info.revoked:
            # A rotated-out refresh token came back: assume it was stolen. Return
            # (not raise) so the revocation commits: a raise rolls the job back.
            pstore.revoke_family_txn(conn, info.family_id, now)
            return None
        if info.expires_at_ms is not None and info.expires_at_ms <= now:
            raise ApiError(ErrorCode.SW_AUTH_EXPIRED_TOKEN, "the refresh token has expired")
        pstore.revoke_token_txn(conn, secret)
        return _issue_pair_txn(
            conn, info.participant_id, info.family_id, now, self._access_ttl, self._refresh_ttl
        )

    async def authenticate(self, token: str | None) -> Principal:
        """Resolve a bearer secret (access token or API key) to a principal."""
        if not token:
            raise ApiError(ErrorCode.AUTH_TOKEN_MISSING, "missing bearer token")
        if len(token) > 256:
            raise _invalid_token()
        return await self._readers.read(self._authenticate_read, token, self._clock())

    @staticmethod
    def _authenticate_read(conn: sqlite3.Connection, token: str, now: int) -> Principal:
        key = hashlib.sha256(token.encode("utf-8")).hexdigest()
        if token.startswith(ids.API_KEY):
            api_key = pstore.lookup_api_key(conn, token)
            if api_key is None or api_key.revoked_at_ms is not None:
                raise _invalid_token()
            if api_key.expires_at_ms is not None and api_key.expires_at_ms <= now:
                raise ApiError(ErrorCode.SW_AUTH_EXPIRED_TOKEN, "the API key has expired")
            return _principal(
                conn,
                api_key.participant_id,
                key,
                "api_key",
                frozenset(api_key.scopes),
                expires_at_ms=api_key.expires_at_ms,
            )
        info = pstore.lookup_token(conn, token)
        if info is None or info.kind != "access" or info.revoked:
            raise _invalid_token()
        if info.expires_at_ms is not None and info.expires_at_ms <= now:
            raise ApiError(ErrorCode.SW_AUTH_EXPIRED_TOKEN, "the access token has expired")
        return _principal(
            conn,
            info.participant_id,
            key,
            "access",
            ALL_SCOPES,
            family_id=info.family_id,
            expires_at_ms=info.expires_at_ms,
        )

    async def check_credential(self, principal: Principal) -> None:
        """:func:`check_credential_txn` on a read snapshot (sees every commit so far)."""
        await self._readers.read(check_credential_txn, principal, self._clock())

    def seconds_left(self, principal: Principal) -> float | None:
        """How long the principal's credential still works; ``None`` for no expiry."""
        if principal.expires_at_ms is None:
            return None
        return max(0.0, (principal.expires_at_ms - self._clock()) / 1000)

    # -- API keys -----------------------------------------------------------

    async def create_api_key(
        self,
        principal: Principal,
        name: str,
        expires_at_ms: int | None,
        scopes: tuple[str, ...] = pstore.ALL_SCOPES,
    ) -> tuple[pstore.ApiKey, str]:
        now = self._clock()
        if expires_at_ms is not None and expires_at_ms <= now:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "expires_at: must be in the future")
        # A key cannot mint a key with more power than itself.
        beyond = [
            s
            for s in scopes
            if not principal.has_scope(s) or (s == "*" and "*" not in principal.scopes)
        ]
        if beyond:
            raise ApiError(
                ErrorCode.AUTH_INSUFFICIENT_SCOPE,
                f"scopes: this credential cannot grant {', '.join(beyond)}",
            )
        secret = ids.secret_token(ids.API_KEY)
        key = await self._writer.write(
            lambda conn: pstore.create_api_key_txn(
                conn,
                key_id=ids.random_id(ids.API_KEY_ID),
                secret=secret,
                participant_id=principal.participant_id,
                name=name,
                now_ms=now,
                expires_at_ms=expires_at_ms,
                scopes=scopes,
            )
        )
        return key, secret

    async def list_api_keys(self, principal: Principal) -> list[pstore.ApiKey]:
        return await self._readers.read(pstore.list_api_keys, principal.participant_id)

    async def revoke_api_key(self, principal: Principal, key_id: str) -> None:
        now = self._clock()
        done = await self._writer.write(
            lambda conn: pstore.revoke_api_key_txn(
                conn, key_id=key_id, participant_id=principal.participant_id, now_ms=now
            )
        )
        if not done:
            raise ApiError(ErrorCode.SW_API_KEY_NOT_FOUND, f"no API key {key_id[:64]!r}")
        self.on_revoked()


def _principal(
    conn: sqlite3.Connection,
    participant_id: str,
    key: str,
    via: str,
    scopes: frozenset[str],
    *,
    family_id: str | None = None,
    expires_at_ms: int | None = None,
) -> Principal:
    found = pstore.get_participant(conn, participant_id)
    if found is None or found.deactivated_at_ms is not None:
        raise _invalid_token()
    return Principal(
        participant_id,
        key,
        via,
        found.participant_type,
        tenant_id=found.tenant_id,
        scopes=scopes,
        is_admin=found.is_admin,
        family_id=family_id,
        expires_at_ms=expires_at_ms,
    )


def check_password(password: str) -> None:
    if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM,
            f"password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters",
        )
