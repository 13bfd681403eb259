"""The one error tree of the wire protocol, grown by family.

Every refusal a client can see is an :class:`ApiError` carrying a stable
machine :class:`Code`. A code knows its HTTP status; the WebSocket layer and
SSE streams put the same code inside their ``error`` frames/events. Only
``homeserver/errors.py`` turns these into bytes on the wire.

    ApiError                       code + message (+ details, retry_after)
    └── Code                       name, HTTP status, family
        ├── ScaiWaveCodes   SW_*   ScaiWave routes and the stream (reference notes 1.17)
        ├── ScaiGridCodes          sessions, /messages, /reply, /members, auth scopes
        ├── ModelCodes             the model layer (CONTRACT 10), the same on every route
        └── ScaiBotCodes           /v1/modules/scaibot/ (seed 002)

``ErrorCode`` is the union namespace (``ErrorCode.SW_NOT_MEMBER``,
``ErrorCode.MODEL_NOT_FOUND``): services raise whichever code fits, and each
route family renders its own vocabulary through :meth:`ApiError.for_family`
(a ScaiWave code becomes its ScaiGrid twin on ScaiGrid and ScaiBot routes,
and the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# Route families: ScaiWave, ScaiGrid (sessions, ScaiGrid room forms), ScaiBot.
Family = Literal["sw", "sg", "bot"]
CodeFamily = Literal["scaiwave", "scaigrid", "model", "scaibot"]


@dataclass(frozen=True, slots=True, eq=False)
class Code:
    """A stable machine code. Singletons: compare with ``is`` or ``==``."""

    name: str
    status: int
    family: CodeFamily

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Code({self.name})"


def _sw(name: str, status: int) -> Code:
    return Code(name, status, "scaiwave")


def _sg(name: str, status: int) -> Code:
    return Code(name, status, "scaigrid")


def _model(name: str, status: int) -> Code:
    return Code(name, status, "model")


def _bot(name: str, status: int) -> Code:
    return Code(name, status, "scaibot")


class ScaiWaveCodes:
    SW_AUTH_INVALID_TOKEN = _sw("SW_AUTH_INVALID_TOKEN", 401)
    SW_AUTH_EXPIRED_TOKEN = _sw("SW_AUTH_EXPIRED_TOKEN", 401)
    SW_AUTH_INSUFFICIENT_PERMISSION = _sw("SW_AUTH_INSUFFICIENT_PERMISSION", 403)
    SW_AUTH_REGISTRATION_DISABLED = _sw("SW_AUTH_REGISTRATION_DISABLED", 403)
    SW_AUTH_INVALID_CREDENTIALS = _sw("SW_AUTH_INVALID_CREDENTIALS", 401)
    SW_USERNAME_TAKEN = _sw("SW_USERNAME_TAKEN", 409)
    SW_NOT_MEMBER = _sw("SW_NOT_MEMBER", 403)
    SW_ROOM_NOT_FOUND = _sw("SW_ROOM_NOT_FOUND", 404)
    SW_ROOM_FORBIDDEN = _sw("SW_ROOM_FORBIDDEN", 403)
    SW_ROOM_FROZEN = _sw("SW_ROOM_FROZEN", 409)
    SW_ROOM_TYPE_INVARIANT = _sw("SW_ROOM_TYPE_INVARIANT", 400)
    SW_PARTICIPANT_NOT_FOUND = _sw("SW_PARTICIPANT_NOT_FOUND", 404)
    SW_EVENT_NOT_FOUND = _sw("SW_EVENT_NOT_FOUND", 404)
    SW_EVENT_TOO_OLD_TO_EDIT = _sw("SW_EVENT_TOO_OLD_TO_EDIT", 409)
    SW_REDACT_FORBIDDEN = _sw("SW_REDACT_FORBIDDEN", 403)
    SW_CONTENT_TOO_LARGE = _sw("SW_CONTENT_TOO_LARGE", 413)
    SW_RATE_LIMIT_EXCEEDED = _sw("SW_RATE_LIMIT_EXCEEDED", 429)
    SW_BAD_JSON = _sw("SW_BAD_JSON", 400)
    SW_INVALID_PARAM = _sw("SW_INVALID_PARAM", 400)
    SW_UNKNOWN_FRAME = _sw("SW_UNKNOWN_FRAME", 400)
    SW_NOT_FOUND = _sw("SW_NOT_FOUND", 404)
    SW_METHOD_NOT_ALLOWED = _sw("SW_METHOD_NOT_ALLOWED", 405)
    SW_API_KEY_NOT_FOUND = _sw("SW_API_KEY_NOT_FOUND", 404)
    SW_INTERNAL = _sw("SW_INTERNAL", 500)
    SW_UNAVAILABLE = _sw("SW_UNAVAILABLE", 503)
    SW_MEDIA_NOT_FOUND = _sw("SW_MEDIA_NOT_FOUND", 404)
    SW_RANGE_NOT_SATISFIABLE = _sw("SW_RANGE_NOT_SATISFIABLE", 416)
    SW_REQUEST_TIMEOUT = _sw("SW_REQUEST_TIMEOUT", 408)
    SW_HEADERS_TOO_LARGE = _sw("SW_HEADERS_TOO_LARGE", 431)
    # AI participants in rooms (CONTRACT 12)
    SW_AI_BUSY = _sw("SW_AI_BUSY", 409)
    SW_AI_NOT_FOUND = _sw("SW_AI_NOT_FOUND", 404)


class ScaiGridCodes:
    AUTH_TOKEN_MISSING = _sg("AUTH_TOKEN_MISSING", 401)
    AUTH_TOKEN_INVALID = _sg("AUTH_TOKEN_INVALID", 401)
    AUTH_INSUFFICIENT_SCOPE = _sg("AUTH_INSUFFICIENT_SCOPE", 403)
    AUTHZ_PERMISSION_DENIED = _sg("AUTHZ_PERMISSION_DENIED", 403)
    VALIDATION_ERROR = _sg("VALIDATION_ERROR", 422)
    ROOM_NOT_FOUND = _sg("ROOM_NOT_FOUND", 404)
    ROOM_ACCESS_DENIED = _sg("ROOM_ACCESS_DENIED", 403)
    ROOM_MEMBER_NOT_FOUND = _sg("ROOM_MEMBER_NOT_FOUND", 404)
    SESSION_NOT_FOUND = _sg("SESSION_NOT_FOUND", 404)
    SESSION_MESSAGE_NOT_FOUND = _sg("SESSION_MESSAGE_NOT_FOUND", 404)
    SESSION_BUSY = _sg("SESSION_BUSY", 409)
    SESSION_CLOSED = _sg("SESSION_CLOSED", 409)
    RATE_LIMITED = _sg("RATE_LIMITED", 429)


class ModelCodes:
    MODEL_NOT_FOUND = _model("MODEL_NOT_FOUND", 404)
    MODEL_UNAVAILABLE = _model("MODEL_UNAVAILABLE", 503)
    BACKEND_ERROR = _model("BACKEND_ERROR", 502)
    BACKEND_TIMEOUT = _model("BACKEND_TIMEOUT", 504)


class ScaiBotCodes:
    BOT_NOT_FOUND = _bot("BOT_NOT_FOUND", 404)
    BOT_SLUG_TAKEN = _bot("BOT_SLUG_TAKEN", 409)
    BOT_INVALID_MODEL = _bot("BOT_INVALID_MODEL", 422)
    TONE_INVALID = _bot("TONE_INVALID", 422)
    EMBED_TOKEN_EXPIRED = _bot("EMBED_TOKEN_EXPIRED", 403)
    EMBED_TOKEN_INVALID = _bot("EMBED_TOKEN_INVALID", 403)
    EMBED_TOKEN_NOT_FOUND = _bot("EMBED_TOKEN_NOT_FOUND", 404)
    CONVERSATION_NOT_FOUND = _bot("CONVERSATION_NOT_FOUND", 404)
    CONVERSATION_CLOSED = _bot("CONVERSATION_CLOSED", 409)
    ESCALATION_NOT_FOUND = _bot("ESCALATION_NOT_FOUND", 404)
    ESCALATION_TRIGGER_INVALID = _bot("ESCALATION_TRIGGER_INVALID", 422)
    ESCALATION_ACTION_FAILED = _bot("ESCALATION_ACTION_FAILED", 502)
    DOCUMENT_NOT_FOUND = _bot("DOCUMENT_NOT_FOUND", 404)
    DOCUMENT_UNSUPPORTED = _bot("DOCUMENT_UNSUPPORTED", 415)
    DOCUMENT_TOO_LARGE = _bot("DOCUMENT_TOO_LARGE", 413)
    KNOWLEDGE_COLLECTION_NOT_FOUND = _bot("KNOWLEDGE_COLLECTION_NOT_FOUND", 404)


class ErrorCode(ScaiWaveCodes, ScaiGridCodes, ModelCodes, ScaiBotCodes):
    """Every code of every family, under one name."""


def all_codes() -> dict[str, Code]:
    """Every code by name (for documentation and tests)."""
    return {
        name: value
        for family in (ScaiWaveCodes, ScaiGridCodes, ModelCodes, ScaiBotCodes)
        for name, value in vars(family).items()
        if isinstance(value, Code)
    }


E = ErrorCode
# A ScaiWave code and the ScaiGrid code a ScaiGrid (or ScaiBot) route answers
# with instead. Non-members of a room get ROOM_NOT_FOUND on ScaiGrid routes.
_SG_TWIN: dict[Code, Code] = {
    E.SW_AUTH_INVALID_TOKEN: E.AUTH_TOKEN_INVALID,
    E.SW_AUTH_EXPIRED_TOKEN: E.AUTH_TOKEN_INVALID,
    E.SW_AUTH_INSUFFICIENT_PERMISSION: E.AUTHZ_PERMISSION_DENIED,
    E.SW_NOT_MEMBER: E.ROOM_NOT_FOUND,
    E.SW_ROOM_NOT_FOUND: E.ROOM_NOT_FOUND,
    E.SW_ROOM_FORBIDDEN: E.ROOM_ACCESS_DENIED,
    E.SW_REDACT_FORBIDDEN: E.ROOM_ACCESS_DENIED,
    E.SW_PARTICIPANT_NOT_FOUND: E.ROOM_MEMBER_NOT_FOUND,
    E.SW_BAD_JSON: E.VALIDATION_ERROR,
    E.SW_INVALID_PARAM: E.VALIDATION_ERROR,
    E.SW_RATE_LIMIT_EXCEEDED: E.RATE_LIMITED,
}
_SW_TWIN: dict[Code, Code] = {
    E.AUTH_TOKEN_MISSING: E.SW_AUTH_INVALID_TOKEN,
    E.AUTH_TOKEN_INVALID: E.SW_AUTH_INVALID_TOKEN,
    E.AUTHZ_PERMISSION_DENIED: E.SW_AUTH_INSUFFICIENT_PERMISSION,
    E.VALIDATION_ERROR: E.SW_INVALID_PARAM,
    E.ROOM_NOT_FOUND: E.SW_ROOM_NOT_FOUND,
    E.ROOM_ACCESS_DENIED: E.SW_ROOM_FORBIDDEN,
    E.ROOM_MEMBER_NOT_FOUND: E.SW_PARTICIPANT_NOT_FOUND,
    E.RATE_LIMITED: E.SW_RATE_LIMIT_EXCEEDED,
}
_TWINS: dict[Family, dict[Code, Code]] = {"sw": _SW_TWIN, "sg": _SG_TWIN, "bot": _SG_TWIN}


class ApiError(Exception):
    """A refusal with a stable code, a human message and optional details."""

    def __init__(
        self,
        code: Code,
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
        return self.code.status

    def for_family(self, family: Family) -> ApiError:
        """The same refusal in the vocabulary of a route family."""
        twin = _TWINS[family].get(self.code)
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
    code = ErrorCode.SW_INVALID_PARAM if family == "sw" else ErrorCode.VALIDATION_ERROR
    return ApiError(code, f"{field}: {message}", details=[{"field": field, "message": message}])
