"""Homeserver settings: defaults < TOML file < ``HOMESERVER_*`` environment < CLI overrides.

Stdlib only. Validation is table-driven: ``_SPECS`` maps every ``Settings`` field to its kind
and allowed range or choices, and every error message names the key (or environment variable)
together with what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

from conf.cluster import ClusterSettings, cluster_section, default_cluster
from conf.knowledge import KnowledgeConfig, default_knowledge, knowledge_section
from conf.sections import (
    AiSettings,
    ModelsSettings,
    ScaibotSettings,
    SectionError,
    SessionsSettings,
    ai_section,
    default_ai,
    default_models,
    default_scaibot,
    default_sessions,
    models_section,
    scaibot_section,
    sessions_section,
)

ENV_PREFIX = "HOMESERVER_"


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key and what is allowed."""


def _no_overrides() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Settings:
    """All homeserver settings. Constructing one validates every field (raises ConfigError)."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    dev: bool = False
    registration_enabled: bool = False
    server_name: str = "localhost"
    tenant_id: str = "ten_default"
    log_level: str = "info"
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 2592000
    db_synchronous: str = "full"
    db_read_connections: int = 4
    writer_max_batch: int = 256
    ws_ping_interval: float = 30.0
    ws_queue_bytes: int = 4194304
    ws_max_frame_bytes: int = 1048576
    ws_close_duplicate: bool = True
    ws_max_connections: int = 20000
    sync_default_limit: int = 100
    sync_max_limit: int = 500
    sync_max_timeout_ms: int = 60000
    sync_default_timeout_ms: int = 30000
    history_default_limit: int = 50
    history_max_limit: int = 200
    max_content_bytes: int = 65536
    max_request_bytes: int = 1048576
    edit_window_seconds: int = 86400
    idempotency_window_seconds: int = 300
    rate_limit_messages: int = 60
    rate_limit_window_seconds: int = 60
    # Read-only mapping; excluded from __hash__ (mappings are unhashable) but compared by __eq__.
    rate_limit_overrides: Mapping[str, int] = field(default_factory=_no_overrides, hash=False)
    typing_timeout: float = 4.0
    presence_idle_seconds: int = 300
    presence_heartbeat_ttl: int = 120
    presence_enabled: bool = True
    media_max_bytes: int = 52428800
    media_uploads_per_minute: int = 30
    max_rooms_per_participant: int = 10000
    max_members_per_room: int = 10000
    metrics_enabled: bool = True
    metrics_port: int = 0
    log_format: str = "text"
    # Nested tables ([models] with [[models.backends]], [ai]): conf/sections.py.
    models: ModelsSettings = field(default_factory=default_models)
    ai: AiSettings = field(default_factory=default_ai)
    sessions: SessionsSettings = field(default_factory=default_sessions)
    scaibot: ScaibotSettings = field(default_factory=default_scaibot)
    knowledge: KnowledgeConfig = field(default_factory=default_knowledge)
    cluster: ClusterSettings = field(default_factory=default_cluster)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.name))
        _check_ordering(self)

    @property
    def effective_registration(self) -> bool:
        """Registration is open if explicitly enabled or in dev mode."""
        return self.registration_enabled or self.dev

    @property
    def effective_dev_echo(self) -> bool:
        """The built-in ``dev/echo`` model is offered in dev mode or when enabled."""
        return self.models.dev_echo or self.dev

    @property
    def effective_ai_open_creation(self) -> bool:
        """Any participant may create AI participants (dev mode, or ``ai.open_creation``)."""
        return self.ai.open_creation or self.dev

    def rate_limit_for(self, participant_id: str) -> int:
        """Messages allowed per window for this participant; 0 means unlimited."""
        return self.rate_limit_overrides.get(participant_id, self.rate_limit_messages)


# --------------------------------------------------------------------------- spec table

Kind = Literal["int", "float", "bool", "str", "choice", "overrides", "section"]


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: Kind
    lo: float = 0  # ints: inclusive; floats: exclusive
    hi: float = 0  # inclusive
    choices: tuple[str, ...] = ()


def _int(lo: int, hi: int) -> _Spec:
    return _Spec("int", lo, hi)


def _float(lo: float, hi: float) -> _Spec:
    return _Spec("float", lo, hi)


def _choice(*choices: str) -> _Spec:
    return _Spec("choice", choices=choices)


_BOOL = _Spec("bool")
_STR = _Spec("str")
_YEAR = 365 * 86400
_MIB = 1 << 20

_SPECS: Mapping[str, _Spec] = MappingProxyType(
    {
        "host": _STR,
        "port": _int(0, 65535),
        "data_dir": _STR,
        "dev": _BOOL,
        "registration_enabled": _BOOL,
        "server_name": _STR,
        "tenant_id": _STR,
        "log_level": _choice("debug", "info", "warning", "error"),
        "access_token_ttl": _int(60, _YEAR),
        "refresh_token_ttl": _int(60, 10 * _YEAR),
        "db_synchronous": _choice("full", "normal"),
        "db_read_connections": _int(1, 64),
        "writer_max_batch": _int(1, 10000),
        "ws_ping_interval": _float(0, 3600),
        "ws_queue_bytes": _int(65536, 1024 * _MIB),
        "ws_max_frame_bytes": _int(1024, 64 * _MIB),
        "ws_close_duplicate": _BOOL,
        "ws_max_connections": _int(1, 1_000_000),
        "sync_default_limit": _int(1, 10000),
        "sync_max_limit": _int(1, 10000),
        "sync_max_timeout_ms": _int(0, 3_600_000),
        "sync_default_timeout_ms": _int(0, 3_600_000),
        "history_default_limit": _int(1, 10000),
        "history_max_limit": _int(1, 10000),
        "max_content_bytes": _int(1024, 64 * _MIB),
        "max_request_bytes": _int(1024, 1024 * _MIB),
        "edit_window_seconds": _int(0, 10 * _YEAR),
        "idempotency_window_seconds": _int(1, 7 * 86400),
        "rate_limit_messages": _int(0, 1_000_000),
        "rate_limit_window_seconds": _int(1, 86400),
        "rate_limit_overrides": _Spec("overrides", 0, 1_000_000),
        "typing_timeout": _float(0, 3600),
        "presence_idle_seconds": _int(1, 7 * 86400),
        "presence_heartbeat_ttl": _int(1, 86400),
        "presence_enabled": _BOOL,
        "media_max_bytes": _int(1, 1 << 40),
        "media_uploads_per_minute": _int(1, 100_000),
        "max_rooms_per_participant": _int(1, 1_000_000),
        "max_members_per_room": _int(1, 1_000_000),
        "metrics_enabled": _BOOL,
        "metrics_port": _int(0, 65535),
        "log_format": _choice("text", "json"),
        "models": _Spec("section"),
        "ai": _Spec("section"),
        "sessions": _Spec("section"),
        "scaibot": _Spec("section"),
        "knowledge": _Spec("section"),
        "cluster": _Spec("section"),
    }
)

# (smaller, larger): the first must not exceed the second.
_ORDERED = (
    ("sync_default_limit", "sync_max_limit"),
    ("sync_default_timeout_ms", "sync_max_timeout_ms"),
    ("history_default_limit", "history_max_limit"),
)


# --------------------------------------------------------------------------- checkers


def _fail(label: str, expected: str, value: object) -> NoReturn:
    raise ConfigError(f"{label}: must be {expected} (got {value!r})")


def _check_int(spec: _Spec, value: object, label: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not spec.lo <= value <= spec.hi:
        _fail(label, f"an integer from {spec.lo} to {spec.hi}", value)
    return value


def _check_float(spec: _Spec, value: object, label: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not spec.lo < value <= spec.hi  # NaN fails the comparison
    ):
        _fail(label, f"a number greater than {spec.lo} and at most {spec.hi}", value)
    return float(value)


def _check_bool(spec: _Spec, value: object, label: str) -> bool:
    if not isinstance(value, bool):
        _fail(label, "true or false", value)
    return value


def _check_str(spec: _Spec, value: object, label: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(label, "a non-empty string", value)
    return value


def _check_choice(spec: _Spec, value: object, label: str) -> str:
    if not isinstance(value, str) or value not in spec.choices:
        _fail(label, "one of " + ", ".join(spec.choices), value)
    return value


def _check_overrides(spec: _Spec, value: object, label: str) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        _fail(label, "a table of participant id = messages per window", value)
    out: dict[str, int] = {}
    for key, count in value.items():
        if not isinstance(key, str) or not key:
            _fail(label, "keyed by non-empty participant ids", key)
        out[key] = _check_int(spec, count, f"{label}[{key!r}]")
    return MappingProxyType(out)


_SECTION_PARSERS: Mapping[str, Callable[[object, str], object]] = {
    "models": models_section,
    "ai": ai_section,
    "sessions": sessions_section,
    "scaibot": scaibot_section,
    "knowledge": knowledge_section,
    "cluster": cluster_section,
}


def _check_section(spec: _Spec, value: object, label: str) -> object:
    name = label.split(".")[0].removeprefix(ENV_PREFIX).lower()
    try:
        return _SECTION_PARSERS[name](value, name)
    except SectionError as exc:
        raise ConfigError(str(exc)) from None


_CHECKERS: Mapping[Kind, Callable[[_Spec, object, str], object]] = {
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "str": _check_str,
    "choice": _check_choice,
    "overrides": _check_overrides,
    "section": _check_section,
}


def _coerce(name: str, value: object, label: str) -> object:
    spec = _SPECS[name]
    return _CHECKERS[spec.kind](spec, value, label)


def _check_ordering(s: Settings) -> None:
    for small, large in _ORDERED:
        got, limit = getattr(s, small), getattr(s, large)
        if got > limit:
            raise ConfigError(f"{small}: must be at most {large} ({limit}) (got {got!r})")


# --------------------------------------------------------------------------- sources


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_SPECS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown setting {key!r}{hint}")


def _validate(data: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if key not in _SPECS:
            raise _unknown(key)
        out[key] = _coerce(key, value, key)
    return out


def _build(values: Mapping[str, Any]) -> Settings:
    return Settings(**values)


def from_mapping(data: Mapping[str, object]) -> Settings:
    """Settings from defaults plus ``data`` (e.g. a parsed TOML document); validates everything."""
    return _build(_validate(data))


def _read_raw(path: str | os.PathLike[str]) -> dict[str, object]:
    where = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read config file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc


def _read_file(path: str | os.PathLike[str]) -> dict[str, object]:
    try:
        return _validate(_read_raw(path))
    except ConfigError as exc:
        raise ConfigError(f"{os.fspath(path)}: {exc}") from None


_ENV_BOOLS = {"1": True, "0": False, "true": True, "false": False}
_ENV_BOOLS |= {"yes": True, "no": False, "on": True, "off": False}


def _number(text: str) -> object:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _parse_env(spec: _Spec, raw: str, var: str) -> object:
    text = raw.strip()
    if spec.kind == "bool":
        if text.lower() not in _ENV_BOOLS:
            _fail(var, "one of " + ", ".join(_ENV_BOOLS), raw)
        return _ENV_BOOLS[text.lower()]
    if spec.kind in ("int", "float"):
        return _number(text) if text else raw
    if spec.kind == "overrides":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{var}: must be a JSON object (got {raw!r}): {exc}") from None
    return text


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, spec in _SPECS.items():
        if spec.kind == "section":
            continue
        var = ENV_PREFIX + name.upper()
        raw = env.get(var)
        if raw is not None:
            out[name] = _coerce(name, _parse_env(spec, raw, var), var)
    return out


def _env_section(env: Mapping[str, str], name: str) -> dict[str, object]:
    """``HOMESERVER_MODELS_DEV_ECHO=true`` → ``{"dev_echo": True}``; values are JSON when they
    parse as JSON (``HOMESERVER_MODELS_BACKENDS='[{...}]'``), else plain strings."""
    prefix = f"{ENV_PREFIX}{name.upper()}_"
    out: dict[str, object] = {}
    for var, raw in env.items():
        if var.startswith(prefix):
            try:
                out[var[len(prefix) :].lower()] = json.loads(raw)
            except json.JSONDecodeError:
                out[var[len(prefix) :].lower()] = raw
    return out


def _raw_table(value: object, label: str) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: must be a table (got {value!r})")
    return dict(value)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Settings with precedence overrides > env (``HOMESERVER_<NAME>``) > TOML file > defaults.

    ``env`` defaults to ``os.environ``; ``None`` values in ``overrides`` are skipped.
    """
    environ = os.environ if env is None else env
    sections = [name for name, spec in _SPECS.items() if spec.kind == "section"]
    raw_sections: dict[str, dict[str, object]] = {name: {} for name in sections}
    merged: dict[str, object] = {}
    if path is not None:
        data = _read_raw(path)
        for name in sections:
            if name in data:
                raw_sections[name] |= _raw_table(data.pop(name), f"{os.fspath(path)}: {name}")
        try:
            merged |= _validate(data)
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc}") from None
    merged |= _from_env(environ)
    for name in sections:
        raw_sections[name] |= _env_section(environ, name)
    if overrides is not None:
        given = {k: v for k, v in overrides.items() if v is not None}
        for name in sections:
            if name in given:
                raw_sections[name] |= _raw_table(given.pop(name), name)
        merged |= _validate(given)
    for name in sections:
        merged[name] = _coerce(name, raw_sections[name], name)
    return _build(merged)


def example_path() -> Path:
    """Path of the bundled ``example.toml`` (every setting at its default)."""
    return Path(__file__).with_name("example.toml")
