"""Bot configuration: the fields of seed 002's table, their defaults and limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.errors import ApiError, ErrorCode, Family, invalid
from protocol.knowledge import KnowledgeSettings, parse_knowledge_settings
from protocol.validation import opt_bool, opt_int, opt_str, req_str

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
STATUSES = ("draft", "active", "archived")
KNOWLEDGE_MODES = ("managed", "linked")
MAX_NAME = 200
MAX_TEXT = 2000
MAX_TOKENS_PER_RESPONSE = 8192
MAX_CONTEXT_MESSAGES = 100
DEFAULT_MAX_TOKENS = 500
DEFAULT_CONTEXT_MESSAGES = 20


@dataclass(frozen=True, slots=True)
class BotConfig:
    """Everything a create or PUT body sets (``status`` only on create)."""

    name: str
    slug: str
    model: str
    display_name: str
    welcome_message: str | None = None
    placeholder_text: str | None = None
    primary_color: str | None = None
    max_tokens_per_response: int = DEFAULT_MAX_TOKENS
    max_context_messages: int = DEFAULT_CONTEXT_MESSAGES
    knowledge_enabled: bool = False
    knowledge_mode: str = "managed"
    knowledge_collection_id: str | None = None
    knowledge_settings: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    status: str = "draft"


def parse_status(value: object, field: str = "status") -> str:
    if value not in STATUSES:
        raise invalid(field, "must be one of draft, active, archived", family="bot")
    assert isinstance(value, str)
    return value


def parse_slug(value: object, field: str = "slug") -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise invalid(
            field,
            "must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            family="bot",
        )
    return value


def parse_bot_config(body: Mapping[str, Any], *, with_status: bool) -> BotConfig:
    """Validate a create (``with_status``) or PUT body. Read-only keys are ignored."""
    f: Family = "bot"
    name = req_str(body, "name", max_len=MAX_NAME, family=f)
    slug = parse_slug(body.get("slug"))
    model = req_str(body, "model", max_len=128, family=f)
    color = opt_str(body, "primary_color", max_len=7, family=f)
    if color is not None and not COLOR_RE.match(color):
        raise invalid("primary_color", "must be a hex colour such as #1a73e8", family=f)
    mode = body.get("knowledge_mode")
    if mode is None:
        mode = "managed"
    if mode not in KNOWLEDGE_MODES:
        raise invalid("knowledge_mode", "must be managed or linked", family=f)
    linked = opt_str(body, "knowledge_collection_id", max_len=128, min_len=1, family=f)
    if mode == "linked" and linked is None:
        raise invalid(
            "knowledge_collection_id", "is required when knowledge_mode is linked", family=f
        )
    max_tokens = opt_int(
        body, "max_tokens_per_response", lo=1, hi=MAX_TOKENS_PER_RESPONSE, family=f
    )
    context = opt_int(body, "max_context_messages", lo=0, hi=MAX_CONTEXT_MESSAGES, family=f)
    return BotConfig(
        name=name,
        slug=slug,
        model=model,
        display_name=opt_str(body, "display_name", max_len=MAX_NAME, min_len=1, family=f) or name,
        welcome_message=opt_str(body, "welcome_message", max_len=MAX_TEXT, family=f),
        placeholder_text=opt_str(body, "placeholder_text", max_len=MAX_NAME, family=f),
        primary_color=color,
        max_tokens_per_response=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        max_context_messages=DEFAULT_CONTEXT_MESSAGES if context is None else context,
        knowledge_enabled=opt_bool(body, "knowledge_enabled", default=False, family=f),
        knowledge_mode=str(mode),
        knowledge_collection_id=linked if mode == "linked" else None,
        knowledge_settings=parse_knowledge_settings(body.get("knowledge_settings")),
        status=parse_status(body.get("status", "draft")) if with_status else "draft",
    )


def with_status(config: BotConfig, status: str) -> BotConfig:
    return replace(config, status=status)


def slug_taken(slug: str) -> ApiError:
    return ApiError(
        ErrorCode.BOT_SLUG_TAKEN,
        f"slug: {slug!r} is already used by another bot of this tenant",
        details={"slug": slug},
    )


def bot_not_found(bot_id: str, tenant_id: str) -> ApiError:
    return ApiError(
        ErrorCode.BOT_NOT_FOUND,
        f"Bot {bot_id[:64]} not found in tenant {tenant_id}",
        details={"bot_id": bot_id[:64]},
    )


def invalid_model(model: str) -> ApiError:
    return ApiError(
        ErrorCode.BOT_INVALID_MODEL,
        f"model: {model[:128]!r} is not a model this server offers (see GET /v1/models)",
        details={"field": "model", "model": model[:128]},
    )
