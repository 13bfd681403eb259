"""Request-body validation shared by the REST shim and the WebSocket handler.

Every helper refuses with :class:`protocol.errors.ApiError` and a message that
names the offending field — never ``KeyError``/``TypeError`` — so a malformed
request is a 400/422 with a code, never a 500 (CONTRACT section 2).

Each helper takes ``family``: ScaiWave routes (``"sw"``) refuse with
``SW_INVALID_PARAM`` (400), ScaiGrid routes (``"sg"``) with
``VALIDATION_ERROR`` (422). Oversized message content is the exception: it is
413 ``SW_CONTENT_TOO_LARGE`` on every route (CONTRACT section 7).

Conventions: a JSON ``null`` counts as absent, so ``opt_*`` helpers return
``None`` for it and ``req_*`` helpers refuse it as missing. Booleans are never
accepted where an integer is expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, overload

import orjson

from protocol.canonical import compact_size
from protocol.errors import ApiError, Code, ErrorCode, Family, invalid
from protocol.ids import looks_like_id

__all__ = [
    "DEFAULT_MAX_STR",
    "MAX_CONTENT_DEPTH",
    "MAX_MENTIONS",
    "MAX_POSITION",
    "Direction",
    "clamp_limit",
    "normalise_mentions",
    "opt_bool",
    "opt_int",
    "opt_list",
    "opt_obj",
    "opt_str",
    "parse_direction",
    "parse_json_body",
    "parse_position",
    "parse_timeout_ms",
    "parse_uint",
    "req_bool",
    "req_int",
    "req_obj",
    "req_str",
    "text_content",
    "validate_content",
]

_T = TypeVar("_T")

Direction = Literal["back", "forward"]

DEFAULT_MAX_STR = 1024
"""Default ``max_len`` for string fields (names, ids, reasons)."""

DEFAULT_MAX_ITEMS = 1000
"""Default ``max_items`` for list fields."""

MAX_CONTENT_DEPTH = 32
"""Deepest container nesting allowed in message content (the object itself is 1)."""

MAX_MENTIONS = 100
"""Most participant ids ``content.mentions`` may hold after normalisation."""

MAX_POSITION = 2**63 - 1
"""Largest stream position a cursor may name (SQLite's INTEGER range)."""

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_MAX_DIGITS = 19  # longer digit strings exceed any limit/position we accept


def _bad_json_code(family: Family) -> Code:
    return ErrorCode.VALIDATION_ERROR if family != "sw" else ErrorCode.SW_BAD_JSON


def _body_error(code: Code, message: str) -> ApiError:
    return ApiError(code, message, details=[{"field": "body", "message": message}])


# --------------------------------------------------------------------------- body


def parse_json_body(raw: bytes, *, max_bytes: int, family: Family = "sw") -> dict[str, Any]:
    """Decode a request body that must be a JSON object.

    An empty (or all-white-space) body is ``{}``. A body over ``max_bytes`` is
    413 ``SW_CONTENT_TOO_LARGE`` on ScaiWave routes (422 on ScaiGrid routes);
    malformed JSON or a non-object is 400 ``SW_BAD_JSON`` (422).
    """
    if len(raw) > max_bytes:
        code = ErrorCode.VALIDATION_ERROR if family != "sw" else ErrorCode.SW_CONTENT_TOO_LARGE
        raise _body_error(code, f"body must be at most {max_bytes} bytes")
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _body_error(_bad_json_code(family), "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _body_error(_bad_json_code(family), "body must be a JSON object")
    return value


# --------------------------------------------------------------------------- fields


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unsupported value"


def _check_str(value: object, field: str, *, max_len: int, min_len: int, family: Family) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, not {_type_name(value)}", family=family)
    if len(value) < min_len:
        if min_len == 1:
            raise invalid(field, "must not be empty", family=family)
        raise invalid(field, f"must be at least {min_len} characters", family=family)
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters", family=family)
    return value


def req_str(
    body: Mapping[str, Any],
    field: str,
    *,
    max_len: int = DEFAULT_MAX_STR,
    min_len: int = 1,
    family: Family = "sw",
) -> str:
    """A required string of ``min_len``..``max_len`` characters."""
    value = body.get(field)
    if value is None:
        raise invalid(field, "is required", family=family)
    return _check_str(value, field, max_len=max_len, min_len=min_len, family=family)


def opt_str(
    body: Mapping[str, Any],
    field: str,
    *,
    max_len: int = DEFAULT_MAX_STR,
    min_len: int = 0,
    family: Family = "sw",
) -> str | None:
    """An optional string (absent or ``null`` → ``None``)."""
    value = body.get(field)
    if value is None:
        return None
    return _check_str(value, field, max_len=max_len, min_len=min_len, family=family)


@overload
def opt_bool(
    body: Mapping[str, Any], field: str, *, default: bool, family: Family = ...
) -> bool: ...
@overload
def opt_bool(
    body: Mapping[str, Any], field: str, *, default: None = ..., family: Family = ...
) -> bool | None: ...
def opt_bool(
    body: Mapping[str, Any],
    field: str,
    *,
    default: bool | None = None,
    family: Family = "sw",
) -> bool | None:
    """An optional boolean (absent or ``null`` → ``default``)."""
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(field, f"must be a boolean, not {_type_name(value)}", family=family)
    return value


def req_bool(body: Mapping[str, Any], field: str, *, family: Family = "sw") -> bool:
    """A required boolean: absent or ``null`` is refused, naming the field.

    For a field that may be left out but, once given, must not be cleared
    (``PATCH`` of a NOT NULL column): check ``field in body`` first.
    """
    value = body.get(field)
    if value is None:
        raise invalid(field, "must be true or false (not null)", family=family)
    if not isinstance(value, bool):
        raise invalid(field, f"must be a boolean, not {_type_name(value)}", family=family)
    return value


def _check_int(value: object, field: str, *, lo: int, hi: int, family: Family) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"must be an integer, not {_type_name(value)}", family=family)
    if value < lo or value > hi:
        raise invalid(field, f"must be between {lo} and {hi}", family=family)
    return value


def req_int(body: Mapping[str, Any], field: str, *, lo: int, hi: int, family: Family = "sw") -> int:
    """A required integer in ``lo..hi`` (inclusive); booleans are refused."""
    value = body.get(field)
    if value is None:
        raise invalid(field, "is required", family=family)
    return _check_int(value, field, lo=lo, hi=hi, family=family)


def opt_int(
    body: Mapping[str, Any], field: str, *, lo: int, hi: int, family: Family = "sw"
) -> int | None:
    """An optional integer in ``lo..hi`` (inclusive); booleans are refused."""
    value = body.get(field)
    if value is None:
        return None
    return _check_int(value, field, lo=lo, hi=hi, family=family)


def _item_ok(item: object, of: type[Any]) -> bool:
    if isinstance(item, bool) and of is not bool:
        return False  # bool is an int subclass; an int list must not take True
    return isinstance(item, of)


@overload
def opt_list(
    body: Mapping[str, Any],
    field: str,
    *,
    max_items: int = ...,
    of: None = ...,
    family: Family = ...,
) -> list[Any] | None: ...
@overload
def opt_list(
    body: Mapping[str, Any],
    field: str,
    *,
    max_items: int = ...,
    of: type[_T],
    family: Family = ...,
) -> list[_T] | None: ...
def opt_list(
    body: Mapping[str, Any],
    field: str,
    *,
    max_items: int = DEFAULT_MAX_ITEMS,
    of: type[Any] | None = None,
    family: Family = "sw",
) -> list[Any] | None:
    """An optional JSON array of at most ``max_items`` items.

    With ``of`` (``str``, ``int``, ``dict``, ...) every item must be of that
    type; the error names the item, e.g. ``ids[3]``.
    """
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(field, f"must be an array, not {_type_name(value)}", family=family)
    if len(value) > max_items:
        raise invalid(field, f"must have at most {max_items} items", family=family)
    if of is not None:
        for i, item in enumerate(value):
            if not _item_ok(item, of):
                raise invalid(f"{field}[{i}]", f"must be {_expected_name(of)}", family=family)
    return value


def _expected_name(of: type[Any]) -> str:
    names: dict[type[Any], str] = {
        str: "a string",
        int: "an integer",
        bool: "a boolean",
        float: "a number",
        dict: "an object",
        list: "an array",
    }
    return names.get(of, f"of type {of.__name__}")


def req_obj(body: Mapping[str, Any], field: str, *, family: Family = "sw") -> dict[str, Any]:
    """A required JSON object."""
    value = body.get(field)
    if value is None:
        raise invalid(field, "is required", family=family)
    if not isinstance(value, dict):
        raise invalid(field, f"must be a JSON object, not {_type_name(value)}", family=family)
    return value


def opt_obj(body: Mapping[str, Any], field: str, *, family: Family = "sw") -> dict[str, Any] | None:
    """An optional JSON object (absent or ``null`` → ``None``)."""
    if body.get(field) is None:
        return None
    return req_obj(body, field, family=family)


# --------------------------------------------------------------------------- content


def _too_deep(value: object, max_depth: int) -> bool:
    """True when containers nest more than ``max_depth`` levels (iterative walk)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def validate_content(content: object, *, max_bytes: int, family: Family = "sw") -> dict[str, Any]:
    """Check message content: a JSON object, not nested deeper than 32, small enough.

    Size is the compact UTF-8 JSON encoding (no spaces) of ``content``; above
    ``max_bytes`` it is 413 ``SW_CONTENT_TOO_LARGE`` on every route family.
    The caller's own content is never echoed in the error.
    """
    if not isinstance(content, dict):
        raise invalid("content", "must be a JSON object", family=family)
    if _too_deep(content, MAX_CONTENT_DEPTH):
        raise invalid(
            "content", f"must not nest deeper than {MAX_CONTENT_DEPTH} levels", family=family
        )
    try:
        size = compact_size(content)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        raise invalid("content", "must contain only JSON values", family=family) from None
    if size > max_bytes:
        message = f"content: must be at most {max_bytes} bytes of compact JSON (got {size})"
        raise ApiError(
            ErrorCode.SW_CONTENT_TOO_LARGE,
            message,
            details=[{"field": "content", "max_bytes": max_bytes, "size": size}],
        )
    return content


def text_content(text: str) -> dict[str, Any]:
    """The content of a plain-text message (ScaiGrid's ``content: str``)."""
    return {"msgtype": "swp.text", "body": text}


# --------------------------------------------------------------------------- query


def parse_uint(raw: str, field: str, family: Family = "sw") -> int | None:
    """A non-negative decimal integer, or ``None`` when it is too long to matter.

    The one parser for integer query parameters: only ASCII digits count
    (``str.isdigit`` and ``int`` also take ``²``, ``①`` or Arabic-Indic digits,
    which is how a query string used to reach a 500).
    """
    text = raw.strip()
    if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
        raise invalid(field, "must not be negative", family=family)
    if not _DIGITS.fullmatch(text):
        raise invalid(field, "must be an integer (ASCII digits)", family=family)
    if len(text.lstrip("0")) > _MAX_DIGITS:
        return None
    return int(text)


def parse_timeout_ms(
    raw: str | None, *, default: int, maximum: int, field: str = "timeout", family: Family = "sw"
) -> int:
    """Milliseconds from the query string: absent → ``default``, clamped to ``maximum``."""
    if raw is None or not raw.strip():
        return default
    value = parse_uint(raw, field, family)
    return maximum if value is None else min(value, maximum)


def clamp_limit(
    raw: str | None,
    *,
    default: int,
    maximum: int,
    field: str = "limit",
    family: Family = "sw",
) -> int:
    """A page size from the query string: absent → ``default``, above ``maximum`` → clamped.

    Non-integers and values below 1 are refused.
    """
    if raw is None or not raw.strip():
        return default
    value = parse_uint(raw, field, family)
    if value is None:
        return maximum
    if value < 1:
        raise invalid(field, "must be at least 1", family=family)
    return min(value, maximum)


def parse_position(raw: str | None, field: str = "from", *, family: Family = "sw") -> int | None:
    """A stream-position cursor (non-negative integer) from the query string, or ``None``."""
    if raw is None or not raw.strip():
        return None
    value = parse_uint(raw, field, family)
    if value is None or value > MAX_POSITION:
        raise invalid(field, "is not a valid position", family=family)
    return value


_DIRECTIONS: dict[str, Direction] = {
    "back": "back",
    "b": "back",
    "backward": "back",
    "backwards": "back",
    "forward": "forward",
    "f": "forward",
    "forwards": "forward",
}


def parse_direction(
    raw: str | None,
    *,
    default: Direction = "back",
    field: str = "direction",
    family: Family = "sw",
) -> Direction:
    """``back`` or ``forward`` (Matrix's ``b``/``f`` accepted); absent → ``default``."""
    if raw is None or not raw.strip():
        return default
    direction = _DIRECTIONS.get(raw.strip().lower())
    if direction is None:
        raise invalid(field, "must be 'back' or 'forward'", family=family)
    return direction


# --------------------------------------------------------------------------- mentions


def _participant_id(value: object, field: str, family: Family) -> str:
    if not isinstance(value, str) or not looks_like_id(value):
        raise invalid(field, "must be a participant id", family=family)
    return value


def normalise_mentions(
    content: Mapping[str, Any], scaigrid_mention: object, *, family: Family = "sw"
) -> dict[str, Any]:
    """Merge ScaiGrid's ``mention: [{type, id}]`` into ``content["mentions"]``.

    Returns a new content dict; the input is not modified. ``content.mentions``
    (if present) must be a list of participant ids; ``scaigrid_mention`` (if not
    ``None``) a list of ``{type, id}`` objects. Ids are de-duplicated keeping
    first-seen order, content mentions first. At most 100 mentions. When
    neither source names anyone and ``content`` had no ``mentions`` key, no key
    is added. Call this before :func:`validate_content` so the size check sees
    the merged list.
    """
    out = dict(content)
    merged: dict[str, None] = {}  # ordered set
    existing = content.get("mentions")
    if existing is not None:
        if not isinstance(existing, list):
            raise invalid("content.mentions", "must be an array of participant ids", family=family)
        for i, pid in enumerate(existing):
            merged[_participant_id(pid, f"content.mentions[{i}]", family)] = None
    if scaigrid_mention is not None:
        if not isinstance(scaigrid_mention, list):
            raise invalid("mention", "must be an array of {type, id} objects", family=family)
        for i, item in enumerate(scaigrid_mention):
            if not isinstance(item, dict):
                raise invalid(f"mention[{i}]", "must be a {type, id} object", family=family)
            kind = item.get("type")
            if not isinstance(kind, str) or not 1 <= len(kind) <= 64:
                raise invalid(f"mention[{i}].type", "must be a non-empty string", family=family)
            merged[_participant_id(item.get("id"), f"mention[{i}].id", family)] = None
            if len(merged) > MAX_MENTIONS:
                break
    if len(merged) > MAX_MENTIONS:
        raise invalid("mentions", f"must name at most {MAX_MENTIONS} participants", family=family)
    if merged or existing is not None:
        out["mentions"] = list(merged)
    return out


SCOPE_RE = re.compile(r"\*|[a-z][a-z0-9_]*(:[a-z0-9_*]+)*")
MAX_SCOPES = 32


def parse_scopes(body: Mapping[str, Any], field: str = "scopes") -> tuple[str, ...]:
    """API-key scopes: ``["*"]`` when absent; else 1-32 names like ``models:use``."""
    value = opt_list(body, field, max_items=MAX_SCOPES, of=str)
    if value is None:
        return ("*",)
    if not value:
        raise invalid(field, "must name at least one scope (or leave it out for all)")
    for i, scope in enumerate(value):
        if len(scope) > 64 or not SCOPE_RE.fullmatch(scope):
            raise invalid(f"{field}[{i}]", "must be '*' or a scope name such as 'models:use'")
    return tuple(dict.fromkeys(value))
