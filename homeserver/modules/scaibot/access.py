"""Who is calling: an operator (bearer token or API key) or a widget visitor (embed token).

An embed token reaches only ``POST /chat`` with its bot and its own visitor's
conversations; every other route refuses it (:func:`operator_only`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeserver.clock import WallClock
from homeserver.identity.auth import Principal
from homeserver.store.database import Readers
from protocol.errors import ApiError, ErrorCode
from protocol.scaibot import embed
from storage.scaibot import bots as store

SECRET_FILE = "scaibot_embed.key"
Authenticate = Callable[[str | None], Awaitable[Principal]]


@dataclass(frozen=True, slots=True)
class Visitor:
    """A widget visitor holding a valid embed token."""

    token_id: str
    bot_id: str
    tenant_id: str
    visitor_id: str
    visitor_email: str | None
    visitor_name: str | None
    metadata: Any


Caller = Principal | Visitor


def load_secret(data_dir: Path) -> bytes:
    """The embed-token signing secret, created (mode 0600) on first start."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    text = path.read_text("ascii").strip()
    if len(text) < 32:
        raise RuntimeError(f"{path}: the embed-token secret is too short; delete it to renew")
    return text.encode("ascii")


def resolve_read(conn: Any, claims: embed.EmbedClaims) -> Visitor:
    """The visitor of a well-signed token: its row exists, is not revoked, and its bot exists."""
    row = store.get_token(conn, claims.token_id)
    if row is None or row.revoked_at_ms is not None or row.bot_id != claims.bot_id:
        raise embed.token_invalid()
    bot = store.get_bot(conn, row.bot_id)
    if bot is None:
        raise embed.token_invalid()
    return Visitor(
        row.token_id,
        row.bot_id,
        bot.tenant_id,
        row.visitor_id,
        row.visitor_email,
        row.visitor_name,
        row.metadata,
    )


class Callers:
    """Resolves a bearer to an operator :class:`Principal` or a :class:`Visitor`."""

    def __init__(
        self, authenticate: Authenticate, readers: Readers, clock: WallClock, secret: bytes
    ) -> None:
        self._authenticate = authenticate
        self._readers = readers
        self._clock = clock
        self.secret = secret

    async def caller(self, bearer: str | None) -> Caller:
        if embed.is_embed_token(bearer):
            assert bearer is not None
            return await self.visitor(bearer)
        return await self._authenticate(bearer)

    async def visitor(self, token: str) -> Visitor:
        """Signature, expiry and the stored row (revocation) are checked on every use."""
        claims = embed.verify(self.secret, token, self._clock())
        return await self._readers.read(resolve_read, claims)

    async def chat_caller(self, bearer: str | None) -> Principal | embed.EmbedClaims:
        """For ``POST /chat``: an embed token is only verified here (signature, expiry);
        its stored row is checked in the turn's one read (:func:`resolve_read`)."""
        if embed.is_embed_token(bearer):
            assert bearer is not None
            return embed.verify(self.secret, bearer, self._clock())
        return await self._authenticate(bearer)

    async def operator(self, bearer: str | None) -> Principal:
        if embed.is_embed_token(bearer):
            raise operator_only()
        return await self._authenticate(bearer)


def operator_only() -> ApiError:
    return ApiError(
        ErrorCode.AUTHZ_PERMISSION_DENIED,
        "an embed token may only chat with its bot and read its own conversations",
    )
