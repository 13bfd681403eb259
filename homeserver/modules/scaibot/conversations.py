"""Conversations: list, transcript, status, the hand-off queue and operator replies.

Operators see every conversation of their tenant; a visitor (embed token) sees
only its own visitor's conversations with its bot, without the internals
(retrieved chunks, escalation errors).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from homeserver.clock import WallClock
from homeserver.identity.auth import Principal
from homeserver.modules.scaibot.access import Caller, Visitor
from homeserver.modules.scaibot.bots import parse_cursor
from homeserver.modules.scaibot.turn import conversation_not_found
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from storage.scaibot import conversations as cstore
from storage.scaibot.conversations import Conversation, ConversationFilter, Escalation, Message

OPERATOR_MESSAGE = "msg_"


@dataclass(frozen=True, slots=True)
class Transcript:
    conversation: Conversation
    messages: list[Message]
    escalations: list[Escalation]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Conversation]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class HandoffPage:
    items: list[tuple[Escalation, Conversation | None]]
    next_cursor: str | None


def _transcript_read(conn: sqlite3.Connection, conversation_id: str) -> Transcript | None:
    conv = cstore.get_conversation(conn, conversation_id)
    if conv is None:
        return None
    return Transcript(
        conv, cstore.messages(conn, conversation_id), cstore.escalations(conn, conversation_id)
    )


def _handoffs_read(
    conn: sqlite3.Connection,
    tenant_id: str,
    status: str | None,
    bot_id: str | None,
    before: int | None,
    limit: int,
) -> list[tuple[Escalation, Conversation | None]]:
    rows = cstore.handoffs(conn, tenant_id, status, bot_id, before, limit)
    return [(e, cstore.get_conversation(conn, e.conversation_id)) for e in rows]


def visible(caller: Caller, conv: Conversation) -> bool:
    if isinstance(caller, Visitor):
        return (
            conv.channel == "embed"
            and conv.bot_id == caller.bot_id
            and conv.visitor_id == caller.visitor_id
        )
    return conv.tenant_id == caller.tenant_id


class ConversationService:
    def __init__(self, writer: Writer, readers: Readers, clock: WallClock) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock

    async def list(self, caller: Caller, f: ConversationFilter, cursor: str | None) -> Page:
        before = parse_cursor(cursor) or None
        if isinstance(caller, Visitor):
            if (f.bot_id not in (None, caller.bot_id)) or (
                f.visitor_id not in (None, caller.visitor_id)
            ):
                return Page([], None)
            f = ConversationFilter(
                caller.tenant_id,
                caller.bot_id,
                caller.visitor_id,
                f.status,
                f.since_ms,
                before,
                f.limit + 1,
            )
        else:
            f = ConversationFilter(
                caller.tenant_id, f.bot_id, f.visitor_id, f.status, f.since_ms, before, f.limit + 1
            )
        found = await self._readers.read(cstore.list_conversations, f)
        if isinstance(caller, Visitor):
            found = [c for c in found if c.channel == "embed"]
        limit = f.limit - 1
        more = len(found) > limit
        page = found[:limit]
        return Page(page, str(page[-1].seq) if more and page else None)

    async def transcript(self, caller: Caller, conversation_id: str) -> Transcript:
        found = await self._readers.read(_transcript_read, conversation_id)
        if found is None or not visible(caller, found.conversation):
            raise conversation_not_found(conversation_id)
        return found

    async def set_status(self, principal: Principal, conversation_id: str, status: str) -> None:
        await self.transcript(principal, conversation_id)
        await self._writer.write(
            cstore.set_conversation_status_txn, conversation_id, status, self._clock()
        )

    async def operator_message(
        self, principal: Principal, conversation_id: str, content: str
    ) -> Message:
        found = await self.transcript(principal, conversation_id)
        if found.conversation.status == "closed":
            raise ApiError(
                ErrorCode.CONVERSATION_CLOSED, f"Conversation {conversation_id} is closed"
            )
        message = Message(
            ids.random_id(OPERATOR_MESSAGE),
            conversation_id,
            "operator",
            content,
            self._clock(),
            author_id=principal.participant_id,
        )

        def txn(conn: sqlite3.Connection) -> None:
            cstore.add_message_txn(conn, message)
            cstore.answer_handoffs_txn(
                conn, conversation_id, principal.participant_id, message.created_at_ms
            )

        await self._writer.write(txn)
        return message

    async def handoffs(
        self,
        principal: Principal,
        status: str | None,
        bot_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> HandoffPage:
        before = parse_cursor(cursor) or None
        found = await self._readers.read(
            _handoffs_read, principal.tenant_id, status, bot_id, before, limit + 1
        )
        more = len(found) > limit
        page = found[:limit]
        return HandoffPage(page, str(page[-1][0].seq) if more and page else None)
