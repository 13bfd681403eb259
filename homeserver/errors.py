"""The one place where errors become wire responses: HTTP bodies, WebSocket
``error`` frames and SSE ``error`` events all render through :func:`wire_error`.

Services raise :class:`protocol.errors.ApiError`; storage raises its own
errors; anything else is a bug. All three end here: an ``ApiError`` is
rendered in its route family's vocabulary, a storage conflict becomes 409, and
an unexpected exception becomes a 500 ``SW_INTERNAL`` whose body says nothing
about the cause (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from werkzeug.exceptions import HTTPException

from protocol.errors import ApiError, ErrorCode, Family
from storage.errors import Conflict, NotFound, StorageError

log = logging.getLogger("homeserver.errors")


def as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException) and exc.code == 413:
        return ApiError(ErrorCode.SW_CONTENT_TOO_LARGE, "the request body is too large")
    if isinstance(exc, HTTPException) and exc.code is not None and exc.code < 500:
        return ApiError(ErrorCode.SW_INVALID_PARAM, exc.description or "bad request")
    if isinstance(exc, Conflict):
        return ApiError(ErrorCode.SW_INVALID_PARAM, "that conflicts with existing data")
    if isinstance(exc, NotFound):
        return ApiError(ErrorCode.SW_NOT_FOUND, "not found")
    if isinstance(exc, StorageError):
        log.error("storage error: %r", exc)
        return ApiError(ErrorCode.SW_UNAVAILABLE, "the server could not complete the request")
    log.exception("unexpected error", exc_info=exc)
    return ApiError(ErrorCode.SW_INTERNAL, "internal error")


def wire_error(exc: BaseException, family: Family) -> ApiError:
    """Any exception as the refusal a client of ``family`` sees."""
    return as_api_error(exc).for_family(family)


def error_body(exc: BaseException, family: Family, request_id: str) -> tuple[dict[str, Any], int]:
    """(JSON body, HTTP status) for an error on a route of ``family``."""
    api = wire_error(exc, family)
    body = {"status": "error", "error": api.to_dict(), "meta": {"request_id": request_id}}
    return body, api.http_status


def error_frame(exc: BaseException, req_id: str | None) -> dict[str, Any]:
    """A stream ``error`` frame (ScaiWave vocabulary)."""
    frame: dict[str, Any] = {"type": "error", "error": wire_error(exc, "sw").to_dict()}
    if req_id is not None:
        frame["req_id"] = req_id
    return frame


def error_event(exc: BaseException, family: Family) -> dict[str, Any]:
    """The payload of an SSE ``error`` event: ``{code, message, ...}``."""
    return wire_error(exc, family).to_dict()
