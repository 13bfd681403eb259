"""Open stream connections by credential: ``duplicate_connection`` and revocation.

A revocation (an API key deleted, a refresh family revoked on token reuse, a
participant deactivated) closes every open connection opened with that
credential with 4001; the revocation watcher (homeserver.identity.revocation) calls
:meth:`Registry.revoke` after the revocation commits.
"""

from __future__ import annotations

from typing import Protocol

from homeserver.identity.auth import Principal

CLOSE_ABORT = 4003


class Closable(Protocol):
    principal: Principal
    participant_id: str

    def close(self, code: int, reason: str) -> None: ...

    def close_unauthorised(self, reason: str, why: str) -> None: ...


class Registry:
    """Every open connection, by credential: for ``duplicate_connection`` and revocation."""

    def __init__(self) -> None:
        self._by_token: dict[str, set[Closable]] = {}
        self.revoked_closes = 0

    def add(self, conn: Closable, *, close_duplicate: bool) -> None:
        same = self._by_token.setdefault(conn.principal.token_key, set())
        if close_duplicate:
            for older in list(same):
                older.close(CLOSE_ABORT, "duplicate_connection")
        same.add(conn)

    def release(self, conn: Closable) -> None:
        key = conn.principal.token_key
        same = self._by_token.get(key)
        if same is not None:
            same.discard(conn)
            if not same:
                del self._by_token[key]

    def revoke(self, kind: str, value: str) -> int:
        """Close (4001) every connection opened with a revoked credential.

        ``kind``: ``credential`` (the secret's hash: an access token or API
        key), ``family`` (a refresh family: its access tokens) or
        ``participant`` (everything of theirs). Returns how many closed.
        """
        if kind == "credential":
            matches = list(self._by_token.get(value, ()))
        else:
            matches = [
                conn
                for same in self._by_token.values()
                for conn in same
                if (kind == "family" and conn.principal.family_id == value)
                or (kind == "participant" and conn.participant_id == value)
            ]
        for conn in matches:
            conn.close_unauthorised("SW_AUTH_INVALID_TOKEN", f"{kind} revoked")
        self.revoked_closes += len(matches)
        return len(matches)

    def __len__(self) -> int:
        return sum(len(same) for same in self._by_token.values())
