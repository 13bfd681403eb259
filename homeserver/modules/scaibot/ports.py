"""The narrow seams between the ScaiBot module's parts.

The bots service implements :class:`BotDirectory`; the knowledge index
implements :class:`Retriever` and registers a :data:`BotDeletionHook`; the chat
turn consumes both. Knowledge is keyed by a bot's ``collection_id`` (``col_...``),
so a ``linked`` bot reads another bot's collection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from homeserver.identity.auth import Principal
from protocol.knowledge import KnowledgeSettings, RetrievedChunk


@dataclass(frozen=True, slots=True)
class BotRef:
    """What other parts of the module need to know about a bot."""

    bot_id: str
    tenant_id: str
    creator_id: str
    status: str  # draft | active | archived
    collection_id: str  # this bot's own knowledge collection
    knowledge_enabled: bool
    knowledge_mode: str  # managed | linked
    knowledge_collection_id: str | None  # linked mode: another bot's collection_id
    knowledge_settings: KnowledgeSettings

    @property
    def retrieval_collection(self) -> str:
        """The collection the chat turn retrieves from."""
        if self.knowledge_mode == "linked" and self.knowledge_collection_id:
            return self.knowledge_collection_id
        return self.collection_id


class BotDirectory(Protocol):
    async def bot_for_read(self, principal: Principal, bot_id: str) -> BotRef:
        """The bot if ``principal``'s tenant owns it, else 404 ``BOT_NOT_FOUND``."""
        ...

    async def bot_for_write(self, principal: Principal, bot_id: str) -> BotRef:
        """As ``bot_for_read``, and the caller is its creator or a tenant admin (else 403)."""
        ...


class Retriever(Protocol):
    async def retrieve(
        self, collection_id: str, query: str, settings: KnowledgeSettings
    ) -> list[RetrievedChunk]:
        """Chunks ranked best first, at most ``settings.top_k``, each scored 0-1 and
        at or above ``settings.score_threshold``."""
        ...


class NoKnowledge:
    """The retriever used until a knowledge index is wired in: retrieves nothing."""

    async def retrieve(
        self, collection_id: str, query: str, settings: KnowledgeSettings
    ) -> list[RetrievedChunk]:
        return []


# Runs inside the writer transaction that deletes a bot: removes what the
# hook's owner keeps for it (knowledge documents, chunks, vectors).
BotDeletionHook = Callable[[sqlite3.Connection, BotRef], None]
