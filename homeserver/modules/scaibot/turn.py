"""What a chat turn is made of, before it streams: the caller's checks, the bot, its
tone and rules, the conversation and its history (one read), the rate limits,
and the visitor's message stored (one write). The streamed steps are in chat.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from homeserver.identity.auth import SCOPE_MODELS_USE, Principal
from homeserver.modules.scaibot.access import Caller, Visitor, resolve_read
from protocol.errors import ApiError, ErrorCode
from protocol.knowledge import RetrievedChunk
from protocol.llm import ChatMessage
from protocol.scaibot.bots import bot_not_found
from protocol.scaibot.embed import EmbedClaims, token_invalid
from protocol.scaibot.escalation import Rule
from protocol.scaibot.tone import Tone
from storage.scaibot import bots as store
from storage.scaibot import conversations as cstore
from storage.scaibot.bots import StoredBot
from storage.scaibot.conversations import Conversation, Message

SENTIMENT_WINDOW_MAX = 20


@dataclass(frozen=True, slots=True)
class ChatRequest:
    bot_id: str
    conversation_id: str | None
    message: str
    include_system_prompt: bool


@dataclass(frozen=True, slots=True)
class Loaded:
    caller: Caller
    bot: StoredBot | None
    tone: Tone
    rules: list[Rule]
    conversation: Conversation | None
    history: list[Message]
    visitor_texts: list[str]


@dataclass
class Turn:
    """One turn's state as it moves through the pipeline."""

    caller: Caller
    request: ChatRequest
    bot: StoredBot
    tone: Tone
    rules: list[Rule]
    history: list[ChatMessage]  # the conversation's recent messages, as the model sees them
    visitor_texts: list[str]  # the visitor's earlier messages, oldest first
    conversation_id: str
    user_message_id: str
    message_id: str  # the answer's id (the start event's message_id)
    open_txn: Callable[[sqlite3.Connection], None]  # stores the conversation and the message
    started: float  # trio.current_time() when the request arrived
    visitor_fields: dict[str, Any] = field(default_factory=dict)
    chunks: list[RetrievedChunk] = field(default_factory=list)
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    total_tokens: int = 0
    finish_reason: str = "stop"
    escalation: Rule | None = None
    escalation_stage: str = ""


def load_read(
    conn: sqlite3.Connection,
    caller: Principal | EmbedClaims,
    bot_id: str,
    conversation_id: str | None,
) -> Loaded:
    """Everything the turn reads, in one snapshot (an embed token's row included)."""
    who = resolve_read(conn, caller) if isinstance(caller, EmbedClaims) else caller
    bot = store.get_bot(conn, bot_id)
    if bot is None:
        return Loaded(who, None, Tone(), [], None, [], [])
    conversation = None
    history: list[Message] = []
    texts: list[str] = []
    if conversation_id is not None:
        conversation = cstore.get_conversation(conn, conversation_id)
        if conversation is not None:
            history = cstore.recent_messages(conn, conversation_id, bot.config.max_context_messages)
            texts = cstore.recent_user_texts(conn, conversation_id, SENTIMENT_WINDOW_MAX)
    rules = [r.rule for r in store.list_rules(conn, bot_id)]
    return Loaded(who, bot, store.get_tone(conn, bot_id), rules, conversation, history, texts)


def model_history(messages: list[Message]) -> list[ChatMessage]:
    """Stored messages as the model sees them (operator answers speak as the assistant).
    A turn keeps only these while it streams, not the stored rows."""
    return [ChatMessage("user" if m.role == "user" else "assistant", m.content) for m in messages]


def conversation_not_found(conversation_id: str) -> ApiError:
    return ApiError(
        ErrorCode.CONVERSATION_NOT_FOUND,
        f"Conversation {conversation_id[:64]} not found",
        details={"conversation_id": conversation_id[:64]},
    )


def check_caller(request: ChatRequest, loaded: Loaded) -> StoredBot:
    """Who may chat with what (CONTRACT 13); refusals carry nothing of the bot."""
    bot, caller = loaded.bot, loaded.caller
    if isinstance(caller, Visitor):
        if request.bot_id != caller.bot_id:
            raise token_invalid("this embed token belongs to another bot")
        if bot is None or bot.config.status != "active":
            raise bot_not_found(request.bot_id, caller.tenant_id)
    else:
        caller.require_scope(SCOPE_MODELS_USE)
        if bot is None or bot.tenant_id != caller.tenant_id or bot.config.status == "archived":
            raise bot_not_found(request.bot_id, caller.tenant_id)
        if request.include_system_prompt and not caller.is_admin:
            raise ApiError(
                ErrorCode.AUTHZ_PERMISSION_DENIED,
                "include_system_prompt: only tenant admins may see the system prompt",
            )
    if request.include_system_prompt and isinstance(caller, Visitor):
        raise ApiError(
            ErrorCode.AUTHZ_PERMISSION_DENIED,
            "include_system_prompt: only tenant admins may see the system prompt",
        )
    if request.conversation_id is not None:
        conv = loaded.conversation
        if conv is None or conv.bot_id != bot.bot_id or not _owns(caller, conv):
            raise conversation_not_found(request.conversation_id)
        if conv.status == "closed":
            raise ApiError(
                ErrorCode.CONVERSATION_CLOSED,
                f"Conversation {conv.conversation_id} is closed; start a new one",
            )
    return bot


def _owns(caller: Caller, conv: Conversation) -> bool:
    if isinstance(caller, Visitor):
        return conv.channel == "embed" and conv.visitor_id == caller.visitor_id
    assert isinstance(caller, Principal)
    return conv.channel == "operator" and conv.visitor_id == caller.participant_id


def visitor_fields(caller: Caller) -> dict[str, Any]:
    if isinstance(caller, Visitor):
        return {
            "visitor_id": caller.visitor_id,
            "visitor_email": caller.visitor_email,
            "visitor_name": caller.visitor_name,
            "metadata": caller.metadata,
            "channel": "embed",
        }
    return {
        "visitor_id": caller.participant_id,
        "visitor_email": None,
        "visitor_name": None,
        "metadata": None,
        "channel": "operator",
    }


def rate_keys(caller: Caller, bot_id: str) -> tuple[str, str]:
    who = caller.visitor_id if isinstance(caller, Visitor) else caller.participant_id
    return f"v:{bot_id}:{who}", f"b:{bot_id}"
