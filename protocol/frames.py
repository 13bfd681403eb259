"""Client -> server stream frames (CONTRACT section 4), parsed without I/O.

A malformed or unknown frame raises :class:`ApiError`; the connection answers
with an ``error`` frame and stays open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from protocol.canonical import JsonObject
from protocol.errors import ApiError, ErrorCode

MAX_REQ_ID = 128


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Typing:
    room_id: str
    typing: bool


@dataclass(frozen=True, slots=True)
class Send:
    req_id: str | None
    room_id: str
    content: JsonObject
    event_uuid: str | None
    as_participant_id: str | None


ClientFrame = Ping | Typing | Send


def _str(frame: dict[str, Any], key: str, *, required: bool, max_len: int = 255) -> str | None:
    value = frame.get(key)
    if value is None:
        if required:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, f"{key}: is required")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM, f"{key}: must be a string of 1 to {max_len} characters"
        )
    return value


def req_id_of(raw: bytes | str) -> str | None:
    """Best-effort ``req_id`` of a frame that failed to parse (for the error reply)."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(frame, dict):
        rid = frame.get("req_id")
        if isinstance(rid, str) and len(rid) <= MAX_REQ_ID:
            return rid
    return None


def parse_client_frame(raw: bytes | str) -> ClientFrame:
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(ErrorCode.SW_BAD_JSON, "frame is not valid JSON") from exc
    if not isinstance(frame, dict):
        raise ApiError(ErrorCode.SW_BAD_JSON, "frame must be a JSON object")
    kind = frame.get("type")
    if kind == "ping":
        return Ping()
    if kind == "typing":
        typing = frame.get("typing")
        if not isinstance(typing, bool):
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "typing: must be true or false")
        room_id = _str(frame, "room_id", required=True)
        assert room_id is not None
        return Typing(room_id=room_id, typing=typing)
    if kind == "send":
        room_id = _str(frame, "room_id", required=True)
        assert room_id is not None
        content = frame.get("content")
        if not isinstance(content, dict):
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "content: must be a JSON object")
        return Send(
            req_id=_str(frame, "req_id", required=False, max_len=MAX_REQ_ID),
            room_id=room_id,
            content=content,
            event_uuid=_str(frame, "event_uuid", required=False),
            as_participant_id=_str(frame, "as_participant_id", required=False),
        )
    if not isinstance(kind, str):
        raise ApiError(ErrorCode.SW_UNKNOWN_FRAME, "frame needs a string 'type'")
    raise ApiError(ErrorCode.SW_UNKNOWN_FRAME, f"unknown frame type {kind[:64]!r}")
