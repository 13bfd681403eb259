"""Bots, tone and embed tokens: the bots service (implements ``BotDirectory``).

Tenant scoping (CONTRACT 13): every participant of the tenant may list and
read; any participant may create; the creator or a tenant admin may change or
delete; other tenants get 404 ``BOT_NOT_FOUND``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridges.models.base import ChatModels
from homeserver.clock import WallClock
from homeserver.identity.auth import Principal
from homeserver.modules.scaibot.ports import BotDeletionHook, BotRef
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from protocol.scaibot import embed
from protocol.scaibot.bots import (
    BotConfig,
    bot_not_found,
    invalid_model,
    slug_taken,
    with_status,
)
from protocol.scaibot.tone import Tone
from storage.errors import Conflict
from storage.scaibot import bots as store
from storage.scaibot.bots import EmbedTokenRow, StoredBot

COLLECTION = "col_"
VISITOR = "vis_"
EMBED_TOKEN_ID = "sbk_"


def bot_ref(bot: StoredBot) -> BotRef:
    c = bot.config
    return BotRef(
        bot_id=bot.bot_id,
        tenant_id=bot.tenant_id,
        creator_id=bot.creator_id,
        status=c.status,
        collection_id=bot.collection_id,
        knowledge_enabled=c.knowledge_enabled,
        knowledge_mode=c.knowledge_mode,
        knowledge_collection_id=c.knowledge_collection_id,
        knowledge_settings=c.knowledge_settings,
    )


def denied(bot_id: str) -> ApiError:
    return ApiError(
        ErrorCode.AUTHZ_PERMISSION_DENIED,
        f"only the creator of bot {bot_id} or a tenant admin may change it",
    )


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    expires_at_ms: int
    visitor_id: str


@dataclass(frozen=True, slots=True)
class BotPage:
    bots: list[StoredBot]
    next_cursor: str | None


class BotService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        models: ChatModels,
        *,
        secret: bytes,
        deletion_hooks: Sequence[BotDeletionHook] = (),
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._models = models
        self._secret = secret
        self._hooks = tuple(deletion_hooks)

    # -- BotDirectory ------------------------------------------------------

    async def bot_for_read(self, principal: Principal, bot_id: str) -> BotRef:
        return bot_ref(await self.get(principal, bot_id))

    async def bot_for_write(self, principal: Principal, bot_id: str) -> BotRef:
        return bot_ref(await self.get_for_write(principal, bot_id))

    # -- bots --------------------------------------------------------------

    async def get(self, principal: Principal, bot_id: str) -> StoredBot:
        bot = await self._readers.read(store.get_bot, bot_id)
        if bot is None or bot.tenant_id != principal.tenant_id:
            raise bot_not_found(bot_id, principal.tenant_id)
        return bot

    async def get_for_write(self, principal: Principal, bot_id: str) -> StoredBot:
        bot = await self.get(principal, bot_id)
        if not (principal.is_admin or bot.creator_id == principal.participant_id):
            raise denied(bot_id)
        return bot

    async def page(
        self, principal: Principal, status: str | None, cursor: str | None, limit: int
    ) -> BotPage:
        after = parse_cursor(cursor)
        found = await self._readers.read(
            store.list_bots, principal.tenant_id, status, after, limit + 1
        )
        more = len(found) > limit
        page = found[:limit]
        return BotPage(page, str(page[-1].seq) if more and page else None)

    async def _check(self, principal: Principal, config: BotConfig) -> None:
        if not self._models.has(config.model):
            raise invalid_model(config.model)
        linked = config.knowledge_collection_id
        if config.knowledge_mode == "linked" and linked is not None:
            found = await self._readers.read(
                store.collection_in_tenant, principal.tenant_id, linked
            )
            if not found:
                raise ApiError(
                    ErrorCode.KNOWLEDGE_COLLECTION_NOT_FOUND,
                    f"knowledge_collection_id: no collection {linked[:128]!r} in this tenant",
                    details={"field": "knowledge_collection_id"},
                )

    async def create(self, principal: Principal, config: BotConfig) -> StoredBot:
        await self._check(principal, config)
        try:
            return await self._writer.write(
                lambda conn: store.create_bot_txn(
                    conn,
                    bot_id=ids.random_id(ids.BOT),
                    tenant_id=principal.tenant_id,
                    creator_id=principal.participant_id,
                    collection_id=ids.random_id(COLLECTION),
                    config=config,
                    now_ms=self._clock(),
                )
            )
        except Conflict:
            raise slug_taken(config.slug) from None

    async def replace(self, principal: Principal, bot_id: str, config: BotConfig) -> StoredBot:
        current = await self.get_for_write(principal, bot_id)
        await self._check(principal, config)
        config = with_status(config, current.config.status)
        try:
            found = await self._writer.write(store.replace_bot_txn, bot_id, config, self._clock())
        except Conflict:
            raise slug_taken(config.slug) from None
        if found is None:
            raise bot_not_found(bot_id, principal.tenant_id)
        return found

    async def set_status(self, principal: Principal, bot_id: str, status: str) -> StoredBot:
        await self.get_for_write(principal, bot_id)
        await self._writer.write(store.set_status_txn, bot_id, status, self._clock())
        return await self.get(principal, bot_id)

    async def delete(self, principal: Principal, bot_id: str) -> None:
        bot = await self.get_for_write(principal, bot_id)
        await self._writer.write(self._delete_txn, bot)

    def _delete_txn(self, conn: sqlite3.Connection, bot: StoredBot) -> None:
        """One transaction: hooks (knowledge) first, then rules, tone, tokens and the
        bot; conversations stay, anonymised."""
        ref = bot_ref(bot)
        for hook in self._hooks:
            hook(conn, ref)
        store.delete_bot_txn(conn, bot.bot_id)

    # -- tone --------------------------------------------------------------

    async def tone(self, principal: Principal, bot_id: str) -> Tone:
        await self.get(principal, bot_id)
        return await self._readers.read(store.get_tone, bot_id)

    async def put_tone(self, principal: Principal, bot_id: str, tone: Tone) -> Tone:
        await self.get_for_write(principal, bot_id)
        await self._writer.write(store.put_tone_txn, bot_id, tone, self._clock())
        return tone

    # -- embed tokens --------------------------------------------------------

    async def mint(
        self,
        principal: Principal,
        bot_id: str,
        *,
        ttl_seconds: int,
        visitor_id: str | None,
        visitor_email: str | None,
        visitor_name: str | None,
        metadata: Any,
    ) -> Minted:
        await self.get_for_write(principal, bot_id)
        now = self._clock()
        row = EmbedTokenRow(
            token_id=ids.random_id(EMBED_TOKEN_ID),
            bot_id=bot_id,
            visitor_id=visitor_id or ids.random_id(VISITOR),
            visitor_email=visitor_email,
            visitor_name=visitor_name,
            metadata=metadata,
            expires_at_ms=now + ttl_seconds * 1000,
            revoked_at_ms=None,
        )
        await self._writer.write(store.create_token_txn, row, now)
        claims = embed.EmbedClaims(row.token_id, bot_id, row.visitor_id, row.expires_at_ms)
        return Minted(embed.sign(self._secret, claims), row.expires_at_ms, row.visitor_id)

    async def revoke(self, principal: Principal, bot_id: str, token: str) -> None:
        await self.get_for_write(principal, bot_id)
        # Expired tokens may still be revoked: only the signature must hold.
        claims = embed.verify(self._secret, token, 0)
        done = claims.bot_id == bot_id and await self._writer.write(
            store.revoke_token_txn, bot_id, claims.token_id, self._clock()
        )
        if not done:
            raise ApiError(ErrorCode.EMBED_TOKEN_NOT_FOUND, f"no embed token of bot {bot_id}")

    async def public_bot(self, bot_id: str) -> StoredBot:
        """For the unauthenticated embed-info: archived bots are not found."""
        bot = await self._readers.read(store.get_bot, bot_id)
        if bot is None or bot.config.status == "archived":
            raise ApiError(
                ErrorCode.BOT_NOT_FOUND, f"Bot {bot_id[:64]} not found", details={"bot_id": bot_id}
            )
        return bot


def parse_cursor(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(
            ErrorCode.VALIDATION_ERROR,
            "cursor: is not a cursor this server gave out",
            details=[{"field": "cursor", "message": "is not a valid cursor"}],
        )
    return int(raw)
