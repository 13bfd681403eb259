"""The one error tree of the wire protocol.

Every refusal a client can see is an :class:`ApiError` carrying a stable
machine code from :class:`ErrorCode`. The code decides the HTTP status; the
WebSocket layer uses the same code inside an ``error`` frame. Only
``homeserver/errors.py`` turns these into bytes on the wire.

    ApiError                      code + message (+ details, retry_after)
    └── every refusal: validation, auth, membership, power, limits

Code families (CONTRACT section 2): ScaiWave routes use ``SW_*``; ScaiGrid
routes (sessions, ``/messages``, ``/reply``, ``/members``) use the ScaiGrid
codes. :func:`for_family` maps a ScaiWave code to its ScaiGrid twin so a
service can raise one code and each route family renders its own vocabulary.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

Family = Literal["sw", "sg"]


class ErrorCode(StrEnum):
    # ScaiWave
    SW_AUTH_INVALID_TOKEN = "SW_AUTH_INVALID_TOKEN"
    SW_AUTH_EXPIRED_TOKEN = "SW_AUTH_EXPIRED_TOKEN"
    SW_AUTH_INSUFFICIENT_PERMISSION = "SW_AUTH_INSUFFICIENT_PERMISSION"
    SW_AUTH_REGISTRATION_DISABLED = "SW_AUTH_REGISTRATION_DISABLED"
    SW_AUTH_INVALID_CREDENTIALS = "SW_AUTH_INVALID_CREDENTIALS"
    SW_USERNAME_TAKEN = "SW_USERNAME_TAKEN"
    SW_NOT_MEMBER = "SW_NOT_MEMBER"
    SW_ROOM_NOT_FOUND = "SW_ROOM_NOT_FOUND"
    SW_ROOM_FORBIDDEN = "SW_ROOM_FORBIDDEN"
    SW_ROOM_FROZEN = "SW_ROOM_FROZEN"
    SW_ROOM_TYPE_INVARIANT = "SW_ROOM_TYPE_INVARIANT"
    SW_PARTICIPANT_NOT_FOUND = "SW_PARTICIPANT_NOT_FOUND"
    SW_EVENT_NOT_FOUND = "SW_EVENT_NOT_FOUND"
    SW_EVENT_TOO_OLD_TO_EDIT = "SW_EVENT_TOO_OLD_TO_EDIT"
    SW_REDACT_FORBIDDEN = "SW_REDACT_FORBIDDEN"
    SW_CONTENT_TOO_LARGE = "SW_CONTENT_TOO_LARGE"
    SW_RATE_LIMIT_EXCEEDED = "SW_RATE_LIMIT_EXCEEDED"
    SW_BAD_JSON = "SW_BAD_JSON"
    SW_INVALID_PARAM = "SW_INVALID_PARAM"
    SW_UNKNOWN_FRAME = "SW_UNKNOWN_FRAME"
    SW_NOT_FOUND = "SW_NOT_FOUND"
    SW_METHOD_NOT_ALLOWED = "SW_METHOD_NOT_ALLOWED"
    SW_API_KEY_NOT_FOUND = "SW_API_KEY_NOT_FOUND"
    SW_INTERNAL = "SW_INTERNAL"
    SW_UNAVAILABLE = "SW_UNAVAILABLE"
    SW_MEDIA_NOT_FOUND = "SW_MEDIA_NOT_FOUND"
    SW_RANGE_NOT_SATISFIABLE = "SW_RANGE_NOT_SATISFIABLE"
    SW_REQUEST_TIMEOUT = "SW_REQUEST_TIMEOUT"
    # ScaiGrid
    AUTH_TOKEN_MISSING = "AUTH_TOKEN_MISSING"
    AUTH_TOKEN_INVALID = "AUTH_TOKEN_INVALID"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    ROOM_NOT_FOUND = "ROOM_NOT_FOUND"
    ROOM_ACCESS_DENIED = "ROOM_ACCESS_DENIED"
    ROOM_MEMBER_NOT_FOUND = "ROOM_MEMBER_NOT_FOUND"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.SW_AUTH_INVALID_TOKEN: 401,
    ErrorCode.SW_AUTH_EXPIRED_TOKEN: 401,
    ErrorCode.SW_AUTH_INSUFFICIENT_PERMISSION: 403,
    ErrorCode.SW_AUTH_REGISTRATION_DISABLED: 403,
    ErrorCode.SW_AUTH_INVALID_CREDENTIALS: 401,
    ErrorCode.SW_USERNAME_TAKEN: 409,
    ErrorCode.SW_NOT_MEMBER: 403,
    ErrorCode.SW_ROOM_NOT_FOUND: 404,
    ErrorCode.SW_ROOM_FORBIDDEN: 403,
    ErrorCode.SW_ROOM_FROZEN: 409,
    ErrorCode.SW_ROOM_TYPE_INVARIANT: 400,
    ErrorCode.SW_PARTICIPANT_NOT_FOUND: 404,
    ErrorCode.SW_EVENT_NOT_FOUND: 404,
    ErrorCode.SW_EVENT_TOO_OLD_TO_EDIT: 409,
    ErrorCode.SW_REDACT_FORBIDDEN: 403,
    ErrorCode.SW_CONTENT_TOO_LARGE: 413,
    ErrorCode.SW_RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.SW_BAD_JSON: 400,
    ErrorCode.SW_INVALID_PARAM: 400,
    ErrorCode.SW_UNKNOWN_FRAME: 400,
    ErrorCode.SW_NOT_FOUND: 404,
    ErrorCode.SW_METHOD_NOT_ALLOWED: 405,
    ErrorCode.SW_API_KEY_NOT_FOUND: 404,
    ErrorCode.SW_INTERNAL: 500,
    ErrorCode.SW_UNAVAILABLE: 503,
    ErrorCode.SW_MEDIA_NOT_FOUND: 404,
    ErrorCode.SW_RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.SW_REQUEST_TIMEOUT: 408,
    ErrorCode.AUTH_TOKEN_MISSING: 401,
    ErrorCode.AUTH_TOKEN_INVALID: 401,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.ROOM_NOT_FOUND: 404,
    ErrorCode.ROOM_ACCESS_DENIED: 403,
    ErrorCode.ROOM_MEMBER_NOT_FOUND: 404,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
}

# A ScaiWave code and the ScaiGrid code a ScaiGrid route answers with instead.
# Non-members of a room get ROOM_NOT_FOUND on ScaiGrid routes (CONTRACT 6).
_SG_TWIN: dict[ErrorCode, ErrorCode] = {
    ErrorCode.SW_AUTH_INVALID_TOKEN: ErrorCode.AUTH_TOKEN_INVALID,
    ErrorCode.SW_AUTH_EXPIRED_TOKEN: ErrorCode.AUTH_TOKEN_INVALID,
    ErrorCode.SW_NOT_MEMBER: ErrorCode.ROOM_NOT_FOUND,
    ErrorCode.SW_ROOM_NOT_FOUND: ErrorCode.ROOM_NOT_FOUND,
    ErrorCode.SW_ROOM_FORBIDDEN: ErrorCode.ROOM_ACCESS_DENIED,
    ErrorCode.SW_REDACT_FORBIDDEN: ErrorCode.ROOM_ACCESS_DENIED,
    ErrorCode.SW_PARTICIPANT_NOT_FOUND: ErrorCode.ROOM_MEMBER_NOT_FOUND,
    ErrorCode.SW_BAD_JSON: ErrorCode.VALIDATION_ERROR,
    ErrorCode.SW_INVALID_PARAM: ErrorCode.VALIDATION_ERROR,
    ErrorCode.SW_RATE_LIMIT_EXCEEDED: ErrorCode.RATE_LIMITED,
}
_SW_TWIN: dict[ErrorCode, ErrorCode] = {
    ErrorCode.AUTH_TOKEN_MISSING: ErrorCode.SW_AUTH_INVALID_TOKEN,
    ErrorCode.AUTH_TOKEN_INVALID: ErrorCode.SW_AUTH_INVALID_TOKEN,
    ErrorCode.VALIDATION_ERROR: ErrorCode.SW_INVALID_PARAM,
    ErrorCode.ROOM_NOT_FOUND: ErrorCode.SW_ROOM_NOT_FOUND,
    ErrorCode.ROOM_ACCESS_DENIED: ErrorCode.SW_ROOM_FORBIDDEN,
    ErrorCode.ROOM_MEMBER_NOT_FOUND: ErrorCode.SW_PARTICIPANT_NOT_FOUND,
    ErrorCode.RATE_LIMITED: ErrorCode.SW_RATE_LIMIT_EXCEEDED,
}


class ApiError(Exception):
    """A refusal with a stable code, a human message and optional details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: Any = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def for_family(self, family: Family) -> ApiError:
        """The same refusal in the vocabulary of a route family."""
        table = _SG_TWIN if family == "sg" else _SW_TWIN
        twin = table.get(self.code)
        if twin is None:
            return self
        return ApiError(twin, self.message, details=self.details, retry_after=self.retry_after)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def invalid(field: str, message: str, *, family: Family = "sw") -> ApiError:
    """A validation refusal naming the offending field."""
    code = ErrorCode.VALIDATION_ERROR if family == "sg" else ErrorCode.SW_INVALID_PARAM
    return ApiError(code, f"{field}: {message}", details=[{"field": field, "message": message}])
