"""Wire shapes of the ScaiBot API (seed 002): bots, rules, conversations, hand-offs."""

from __future__ import annotations

from typing import Any

from protocol.scaibot.escalation import public_action_config
from protocol.timefmt import iso_ms, iso_or_none
from storage.scaibot.bots import StoredBot, StoredRule
from storage.scaibot.conversations import Conversation, Escalation, Message


def bot_view(bot: StoredBot) -> dict[str, Any]:
    c = bot.config
    return {
        "id": bot.bot_id,
        "tenant_id": bot.tenant_id,
        "name": c.name,
        "slug": c.slug,
        "model": c.model,
        "display_name": c.display_name,
        "welcome_message": c.welcome_message,
        "placeholder_text": c.placeholder_text,
        "primary_color": c.primary_color,
        "max_tokens_per_response": c.max_tokens_per_response,
        "max_context_messages": c.max_context_messages,
        "knowledge_enabled": c.knowledge_enabled,
        "knowledge_mode": c.knowledge_mode,
        "knowledge_collection_id": c.knowledge_collection_id,
        "knowledge_settings": c.knowledge_settings.to_dict(),
        "collection_id": bot.collection_id,
        "status": c.status,
        "created_by": bot.creator_id,
        "created_at": iso_ms(bot.created_at_ms),
        "updated_at": iso_ms(bot.updated_at_ms),
    }


def embed_info_view(bot: StoredBot, widget_url: str) -> dict[str, Any]:
    c = bot.config
    return {
        "bot_id": bot.bot_id,
        "display_name": c.display_name,
        "welcome_message": c.welcome_message,
        "placeholder_text": c.placeholder_text,
        "primary_color": c.primary_color,
        "widget_url": widget_url,
    }


def rule_view(stored: StoredRule) -> dict[str, Any]:
    spec = stored.rule.spec
    return {
        "id": stored.rule.rule_id,
        "bot_id": stored.bot_id,
        "name": spec.name,
        "priority": spec.priority,
        "trigger_type": spec.trigger_type,
        "trigger_config": spec.trigger_config,
        "action_type": spec.action_type,
        "action_config": public_action_config(spec.action_type, spec.action_config),
        "message": spec.message,
        "created_at": iso_ms(stored.created_at_ms),
        "updated_at": iso_ms(stored.updated_at_ms),
    }


def conversation_view(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.conversation_id,
        "bot_id": c.bot_id,
        "visitor_id": c.visitor_id,
        "visitor_email": c.visitor_email,
        "visitor_name": c.visitor_name,
        "metadata": c.metadata,
        "channel": c.channel,
        "status": c.status,
        "started_at": iso_ms(c.started_at_ms),
        "updated_at": iso_ms(c.updated_at_ms),
    }


def message_view(m: Message, *, internals: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.message_id,
        "role": m.role,
        "content": m.content,
        "created_at": iso_ms(m.created_at_ms),
    }
    if m.role == "assistant":
        out["citations"] = m.citations or []
        out["tokens"] = m.tokens
        out["latency_ms"] = m.latency_ms
        out["finish_reason"] = m.finish_reason
        if internals:
            out["retrieved_chunks"] = m.retrieved or []
    if m.role == "operator":
        out["operator_id"] = m.author_id
    return out


def escalation_view(e: Escalation, *, internals: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.escalation_id,
        "rule_id": e.rule_id,
        "rule_name": e.rule_name,
        "trigger_type": e.trigger_type,
        "action_type": e.action_type,
        "message": e.message,
        "message_id": e.message_id,
        "stage": e.stage,
        "status": e.status,
        "created_at": iso_ms(e.created_at_ms),
    }
    if internals:
        out["attempts"] = e.attempts
        out["error"] = e.error
        out["answered_by"] = e.answered_by
        out["updated_at"] = iso_or_none(e.updated_at_ms)
    return out


def handoff_view(e: Escalation, conv: Conversation | None) -> dict[str, Any]:
    return {
        "id": e.escalation_id,
        "conversation_id": e.conversation_id,
        "bot_id": e.bot_id,
        "rule_id": e.rule_id,
        "rule_name": e.rule_name,
        "trigger_type": e.trigger_type,
        "message": e.message,
        "status": e.status,
        "answered_by": e.answered_by,
        "visitor_id": conv.visitor_id if conv else None,
        "visitor_name": conv.visitor_name if conv else None,
        "conversation_status": conv.status if conv else None,
        "created_at": iso_ms(e.created_at_ms),
        "updated_at": iso_ms(e.updated_at_ms),
    }
