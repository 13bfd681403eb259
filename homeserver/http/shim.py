"""The thin Quart shim: envelope, auth, body parsing, and the error boundary.

Routes hold no business logic: they parse, call a service, render. Every
route is registered through :func:`route`, which runs the handler inside the
single error boundary (``homeserver.errors``) with its route family.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from quart import Quart, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException

from homeserver.auth import Principal
from homeserver.errors import error_body
from protocol.errors import ApiError, ErrorCode, Family
from protocol.validation import parse_json_body

log = logging.getLogger("homeserver.http")

Handler = Callable[..., Awaitable[Response]]
H = TypeVar("H", bound=Handler)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def new_request_id() -> str:
    return "req_" + secrets.token_urlsafe(12)


def request_id() -> str:
    """This request's id: the same in its envelope, its log line and ``X-Request-Id``."""
    if not has_request_context():
        return new_request_id()
    rid: str | None = getattr(g, "request_id", None)
    if rid is None:
        rid = g.request_id = new_request_id()
    return rid


def ok(data: Any, status: int = 200, **meta: Any) -> Response:
    return json_response(
        {"status": "ok", "data": data, "meta": {**meta, "request_id": request_id()}}, status
    )


def error_response(exc: BaseException, family: Family) -> Response:
    body, status = error_body(exc, family, request_id())
    headers = {}
    retry = body["error"].get("retry_after")
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return json_response(body, status, headers)


def route(app: Quart, path: str, methods: list[str], family: Family = "sw") -> Callable[[H], H]:
    """Register a handler behind the error boundary of its route family."""

    def decorate(handler: H) -> H:
        async def endpoint(**kwargs: Any) -> Response:
            try:
                return await handler(**kwargs)
            except Exception as exc:
                return error_response(exc, family)

        endpoint.__name__ = f"{'_'.join(methods)} {path}"
        app.add_url_rule(path, endpoint.__name__, endpoint, methods=methods)
        return handler

    return decorate


async def json_body(max_bytes: int, family: Family = "sw") -> dict[str, Any]:
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)
    return parse_json_body(raw, max_bytes=max_bytes, family=family)


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


AuthFn = Callable[[str | None], Awaitable[Principal]]


def install_fallbacks(app: Quart, max_request_bytes: int) -> None:
    """404/405/413 and anything Quart raises itself, in the same envelope."""
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = {
            404: ErrorCode.SW_NOT_FOUND,
            405: ErrorCode.SW_METHOD_NOT_ALLOWED,
            413: ErrorCode.SW_CONTENT_TOO_LARGE,
        }.get(exc.code or 400, ErrorCode.SW_INVALID_PARAM)
        message = {
            404: f"no route {request.method} {request.path[:200]}",
            405: f"method {request.method} is not allowed here",
            413: f"request body over {max_request_bytes} bytes",
        }.get(exc.code or 400, exc.description or "bad request")
        return error_response(ApiError(code, message), "sw")

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        return error_response(exc, "sw")
