"""Nested settings tables: ``[models]`` with ``[[models.backends]]``, and ``[ai]``.

Each table is a frozen dataclass validated by its own small spec table, with
messages that name the dotted key (``models.backends[0].timeout_s``). Stdlib only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn


class SectionError(ValueError):
    """A nested setting is unknown or invalid (conf.settings turns it into ConfigError)."""


def _fail(label: str, expected: str, value: object) -> NoReturn:
    raise SectionError(f"{label}: must be {expected} (got {value!r})")


def _int(value: object, label: str, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _fail(label, f"an integer from {lo} to {hi}", value)
    return value


def _float(value: object, label: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo < value <= hi:
        _fail(label, f"a number greater than {lo} and at most {hi}", value)
    return float(value)


def _bool(value: object, label: str) -> bool:
    if not isinstance(value, bool):
        _fail(label, "true or false", value)
    return value


def _str(value: object, label: str, *, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        _fail(label, "a non-empty string of at most 2048 characters", value)
    if pattern is not None and not pattern.fullmatch(value):
        _fail(label, f"a string matching {pattern.pattern}", value)
    return value


def _opt_str(value: object, label: str) -> str | None:
    return None if value is None else _str(value, label)


def _table(value: object, label: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(label, "a table", value)
    for key in value:
        if key not in allowed:
            raise SectionError(
                f"{label}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )
    return value


SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URL_RE = re.compile(r"https?://[^\s]+")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model a backend offers, as clients see it."""

    slug: str
    upstream_id: str
    display_name: str
    context_window: int = 8192
    max_output_tokens: int = 2048
    modality: str = "text"


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """One OpenAI-compatible upstream (``[[models.backends]]``)."""

    name: str
    base_url: str
    api_key: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    models: tuple[ModelEntry, ...] = ()

    def resolved_api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key itself, or the value of ``api_key_env`` at call time."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env is not None:
            return (os.environ if env is None else env).get(self.api_key_env)
        return None


@dataclass(frozen=True, slots=True)
class ModelsSettings:
    """``[models]``: the built-in ``dev/echo`` model and the upstream backends."""

    dev_echo: bool = False
    dev_echo_delay_ms: int = 5
    backends: tuple[BackendSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class AiSettings:
    """``[ai]``: AI participants in rooms (CONTRACT 12)."""

    open_creation: bool = False
    max_concurrent_generations: int = 64
    context_messages: int = 20
    rate_limit: int = 30
    chunk_interval_ms: int = 50


@dataclass(frozen=True, slots=True)
class SessionsSettings:
    """``[sessions]``: ScaiGrid sessions (CONTRACT 11)."""

    heartbeat_seconds: float = 15.0
    max_generations: int = 1024
    max_per_participant: int = 10000
    # The listener serves the streamed replies itself, writing SSE straight to the
    # socket (homeserver/http/direct_sessions.py); off: Quart serves them like every route.
    direct_sse: bool = True


_MODEL_KEYS = {"slug", "upstream_id", "display_name", "context_window", "max_output_tokens"}
_MODEL_KEYS |= {"modality"}
_BACKEND_KEYS = {"name", "base_url", "api_key", "api_key_env", "timeout_s", "models"}


def _model(value: object, label: str) -> ModelEntry:
    t = _table(value, label, _MODEL_KEYS)
    if "slug" not in t:
        raise SectionError(f"{label}.slug: is required")
    slug = _str(t["slug"], f"{label}.slug", pattern=SLUG_RE)
    window = _int(t.get("context_window", 8192), f"{label}.context_window", 256, 10_000_000)
    out = _int(t.get("max_output_tokens", 2048), f"{label}.max_output_tokens", 1, 1_000_000)
    if out >= window:
        raise SectionError(f"{label}.max_output_tokens: must be below context_window ({window})")
    modality = t.get("modality", "text")
    if modality not in ("text", "multimodal"):
        _fail(f"{label}.modality", "text or multimodal", modality)
    return ModelEntry(
        slug=slug,
        upstream_id=_str(t.get("upstream_id", slug), f"{label}.upstream_id"),
        display_name=_str(t.get("display_name", slug), f"{label}.display_name"),
        context_window=window,
        max_output_tokens=out,
        modality=modality,
    )


def _backend(value: object, label: str) -> BackendSettings:
    t = _table(value, label, _BACKEND_KEYS)
    for key in ("name", "base_url"):
        if key not in t:
            raise SectionError(f"{label}.{key}: is required")
    models = t.get("models", [])
    if not isinstance(models, list) or not models:
        _fail(f"{label}.models", "a non-empty list of model tables", models)
    return BackendSettings(
        name=_str(t["name"], f"{label}.name", pattern=_NAME_RE),
        base_url=_str(t["base_url"], f"{label}.base_url", pattern=_URL_RE).rstrip("/"),
        api_key=_opt_str(t.get("api_key"), f"{label}.api_key"),
        api_key_env=_opt_str(t.get("api_key_env"), f"{label}.api_key_env"),
        timeout_s=_float(t.get("timeout_s", 60.0), f"{label}.timeout_s", 0, 3600),
        models=tuple(_model(m, f"{label}.models[{i}]") for i, m in enumerate(models)),
    )


def models_section(value: object, label: str = "models") -> ModelsSettings:
    if isinstance(value, ModelsSettings):
        return value
    t = _table(value, label, {"dev_echo", "dev_echo_delay_ms", "backends"})
    backends = t.get("backends", [])
    if not isinstance(backends, list | tuple):
        _fail(f"{label}.backends", "a list of backend tables", backends)
    parsed = tuple(_backend(b, f"{label}.backends[{i}]") for i, b in enumerate(backends))
    names = [b.name for b in parsed]
    if len(set(names)) != len(names):
        raise SectionError(f"{label}.backends: backend names must be unique (got {names})")
    slugs = [m.slug for b in parsed for m in b.models]
    dupes = sorted({s for s in slugs if slugs.count(s) > 1})
    if dupes:
        raise SectionError(f"{label}.backends: model slugs must be unique (repeated: {dupes})")
    if "dev/echo" in slugs:
        raise SectionError(f"{label}.backends: the slug 'dev/echo' is the built-in dev model")
    return ModelsSettings(
        dev_echo=_bool(t.get("dev_echo", False), f"{label}.dev_echo"),
        dev_echo_delay_ms=_int(
            t.get("dev_echo_delay_ms", 5), f"{label}.dev_echo_delay_ms", 0, 60_000
        ),
        backends=parsed,
    )


def ai_section(value: object, label: str = "ai") -> AiSettings:
    if isinstance(value, AiSettings):
        return value
    keys = {"open_creation", "max_concurrent_generations", "context_messages", "rate_limit"}
    t = _table(value, label, keys | {"chunk_interval_ms"})
    return AiSettings(
        open_creation=_bool(t.get("open_creation", False), f"{label}.open_creation"),
        max_concurrent_generations=_int(
            t.get("max_concurrent_generations", 64),
            f"{label}.max_concurrent_generations",
            1,
            10_000,
        ),
        context_messages=_int(t.get("context_messages", 20), f"{label}.context_messages", 1, 500),
        rate_limit=_int(t.get("rate_limit", 30), f"{label}.rate_limit", 0, 100_000),
        chunk_interval_ms=_int(
            t.get("chunk_interval_ms", 50), f"{label}.chunk_interval_ms", 1, 10_000
        ),
    )


def sessions_section(value: object, label: str = "sessions") -> SessionsSettings:
    if isinstance(value, SessionsSettings):
        return value
    t = _table(
        value, label, {"heartbeat_seconds", "max_generations", "max_per_participant", "direct_sse"}
    )
    return SessionsSettings(
        heartbeat_seconds=_float(
            t.get("heartbeat_seconds", 15.0), f"{label}.heartbeat_seconds", 0, 3600
        ),
        max_generations=_int(
            t.get("max_generations", 1024), f"{label}.max_generations", 1, 100_000
        ),
        max_per_participant=_int(
            t.get("max_per_participant", 10000), f"{label}.max_per_participant", 1, 10_000_000
        ),
        direct_sse=_bool(t.get("direct_sse", True), f"{label}.direct_sse"),
    )


def default_sessions() -> SessionsSettings:
    return SessionsSettings()


def default_models() -> ModelsSettings:
    return ModelsSettings()


def default_ai() -> AiSettings:
    return AiSettings()


@dataclass(frozen=True, slots=True)
class ScaibotSettings:
    """``[scaibot]``: the ScaiBot module (CONTRACT 13): limits, SMTP, outbound actions."""

    visitor_messages_per_minute: int = 20
    bot_messages_per_minute: int = 600
    widget_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "scaibot@localhost"
    smtp_timeout_s: float = 10.0
    action_attempts: int = 3
    action_backoff_ms: int = 500
    webhook_timeout_s: float = 5.0
    # The listener serves ``POST /chat`` itself, writing SSE straight to the socket
    # (homeserver/modules/scaibot/direct_chat.py); off: Quart serves it like every route.
    direct_sse: bool = True


_SCAIBOT_KEYS = {
    "visitor_messages_per_minute",
    "bot_messages_per_minute",
    "widget_url",
    "smtp_host",
    "smtp_port",
    "smtp_from",
    "smtp_timeout_s",
    "action_attempts",
    "action_backoff_ms",
    "webhook_timeout_s",
    "direct_sse",
}


def _opt_text(value: object, label: str) -> str:
    if value == "":
        return ""
    return _str(value, label)


def scaibot_section(value: object, label: str = "scaibot") -> ScaibotSettings:
    if isinstance(value, ScaibotSettings):
        return value
    t = _table(value, label, _SCAIBOT_KEYS)
    d = ScaibotSettings()
    return ScaibotSettings(
        visitor_messages_per_minute=_int(
            t.get("visitor_messages_per_minute", d.visitor_messages_per_minute),
            f"{label}.visitor_messages_per_minute",
            0,
            1_000_000,
        ),
        bot_messages_per_minute=_int(
            t.get("bot_messages_per_minute", d.bot_messages_per_minute),
            f"{label}.bot_messages_per_minute",
            0,
            10_000_000,
        ),
        widget_url=_opt_text(t.get("widget_url", d.widget_url), f"{label}.widget_url"),
        smtp_host=_opt_text(t.get("smtp_host", d.smtp_host), f"{label}.smtp_host"),
        smtp_port=_int(t.get("smtp_port", d.smtp_port), f"{label}.smtp_port", 1, 65535),
        smtp_from=_str(t.get("smtp_from", d.smtp_from), f"{label}.smtp_from"),
        smtp_timeout_s=_float(
            t.get("smtp_timeout_s", d.smtp_timeout_s), f"{label}.smtp_timeout_s", 0, 300
        ),
        action_attempts=_int(
            t.get("action_attempts", d.action_attempts), f"{label}.action_attempts", 1, 20
        ),
        action_backoff_ms=_int(
            t.get("action_backoff_ms", d.action_backoff_ms),
            f"{label}.action_backoff_ms",
            0,
            600_000,
        ),
        webhook_timeout_s=_float(
            t.get("webhook_timeout_s", d.webhook_timeout_s), f"{label}.webhook_timeout_s", 0, 120
        ),
        direct_sse=_bool(t.get("direct_sse", d.direct_sse), f"{label}.direct_sse"),
    )


def default_scaibot() -> ScaibotSettings:
    return ScaibotSettings()


__all__ = [
    "AiSettings",
    "BackendSettings",
    "ModelEntry",
    "ModelsSettings",
    "ScaibotSettings",
    "SectionError",
    "SessionsSettings",
    "ai_section",
    "default_ai",
    "default_models",
    "default_scaibot",
    "default_sessions",
    "models_section",
    "scaibot_section",
    "sessions_section",
]
