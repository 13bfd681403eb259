"""Request bodies of the sessions API and their limits (CONTRACT 11). Pure.

Every refusal is 422 ``VALIDATION_ERROR`` naming the field. A JSON ``null``
for ``title`` or ``system_prompt`` clears it; ``null`` metadata is ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.canonical import compact_size
from protocol.errors import Family, invalid
from protocol.validation import opt_bool, opt_int, req_str

MAX_TITLE = 200
MAX_SYSTEM_PROMPT_BYTES = 32 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_CONTENT_BYTES = 64 * 1024
MAX_TOKENS = 32768
MAX_TEMPERATURE = 2.0
MAX_MODEL_SLUG = 128
STATUSES = ("active", "closed")
PATCHABLE = ("title", "system_prompt", "metadata", "status")

_F: Family = "sg"


@dataclass(frozen=True, slots=True)
class CreateSession:
    model: str
    title: str | None
    system_prompt: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendMessage:
    content: str
    stream: bool
    max_tokens: int | None
    temperature: float | None


def _text(body: Mapping[str, Any], field: str, max_len: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string or null", family=_F)
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters", family=_F)
    return value


def _system_prompt(body: Mapping[str, Any]) -> str | None:
    value = _text(body, "system_prompt", MAX_SYSTEM_PROMPT_BYTES)
    if value is not None and len(value.encode("utf-8")) > MAX_SYSTEM_PROMPT_BYTES:
        raise invalid(
            "system_prompt", f"must be at most {MAX_SYSTEM_PROMPT_BYTES} bytes", family=_F
        )
    return value or None


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("metadata", "must be an object", family=_F)
    if _depth(value) > MAX_METADATA_DEPTH:
        raise invalid("metadata", f"must nest at most {MAX_METADATA_DEPTH} levels", family=_F)
    if compact_size(value) > MAX_METADATA_BYTES:
        raise invalid("metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON", family=_F)
    return value


def parse_create(body: Mapping[str, Any]) -> CreateSession:
    return CreateSession(
        model=req_str(body, "model", max_len=MAX_MODEL_SLUG, family=_F),
        title=_text(body, "title", MAX_TITLE),
        system_prompt=_system_prompt(body),
        metadata=_metadata(body),
    )


def parse_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    """The changes a PATCH asks for; any other field is refused by name."""
    for key in body:
        if key not in PATCHABLE:
            allowed = ", ".join(PATCHABLE)
            raise invalid(key[:64], f"is not editable (editable: {allowed})", family=_F)
    changes: dict[str, Any] = {}
    if "title" in body:
        changes["title"] = _text(body, "title", MAX_TITLE)
    if "system_prompt" in body:
        changes["system_prompt"] = _system_prompt(body)
    if "metadata" in body:
        changes["metadata"] = _metadata(body)
    if "status" in body:
        status = body["status"]
        if status not in STATUSES:
            raise invalid("status", "must be 'active' or 'closed'", family=_F)
        changes["status"] = status
    return changes


def _temperature(body: Mapping[str, Any]) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid("temperature", "must be a number", family=_F)
    if not 0.0 <= value <= MAX_TEMPERATURE:  # NaN fails too
        raise invalid("temperature", f"must be from 0.0 to {MAX_TEMPERATURE}", family=_F)
    return float(value)


def parse_send(body: Mapping[str, Any]) -> SendMessage:
    content = req_str(body, "content", max_len=MAX_CONTENT_BYTES, family=_F)
    if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
        raise invalid("content", f"must be at most {MAX_CONTENT_BYTES} bytes", family=_F)
    return SendMessage(
        content=content,
        stream=bool(opt_bool(body, "stream", family=_F)),
        max_tokens=opt_int(body, "max_tokens", lo=1, hi=MAX_TOKENS, family=_F),
        temperature=_temperature(body),
    )
