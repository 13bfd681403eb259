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
import trio
from quart import Blueprint, Quart, Response, g, has_request_context, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from homeserver.errors import error_body
from homeserver.http.upload_body import StreamingBody, TrackedBody, track_bodies
from homeserver.identity.auth import Principal
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


DRAIN_MAX = 16 << 20  # an over-limit body up to this size is read to its end...
DRAIN_SECONDS = 5.0  # ...for at most this long, so the connection stays usable


class BodyTooLarge(Exception):
    def __init__(self, limit: int | None, drained: bool) -> None:
        super().__init__("request body too large")
        self.limit = limit
        self.drained = drained


async def read_body_first() -> None:
    """Take the whole request body before the handler runs (issue 9, defect 6).

    Quart buffers bodies anyway (up to ``max_request_bytes``); reading it here
    means an over-limit body is refused (413) before any handler acts on the
    request, also on routes that take no body (``/join``). The refusal waits
    (bounded) for the rest of the body to arrive, so the connection can carry
    the client's next request; past the bounds it says ``Connection: close``.
    Streaming routes (media upload) read and limit their own bodies.
    """
    body = request.body
    if isinstance(body, StreamingBody):
        return
    try:
        await request.get_data(cache=True)
    except RequestEntityTooLarge:
        drained = False
        if isinstance(body, TrackedBody):
            if body.expected is None or body.expected <= DRAIN_MAX:
                with trio.move_on_after(DRAIN_SECONDS):
                    await body.wire_done.wait()
            drained = body.wire_done.is_set()
            raise BodyTooLarge(body.limit, drained) from None
        raise BodyTooLarge(None, drained) from None


def _too_large(exc: BodyTooLarge, family: Family) -> Response:
    limit = f"{exc.limit} bytes" if exc.limit is not None else "the limit"
    response = error_response(
        ApiError(ErrorCode.SW_CONTENT_TOO_LARGE, f"request body over {limit}"), family
    )
    if not exc.drained:
        response.headers["Connection"] = "close"
    return response


def route(
    app: Quart | Blueprint, path: str, methods: list[str], family: Family = "sw"
) -> Callable[[H], H]:
    """Register a handler (on the app or a blueprint) behind its route family's error boundary."""

    def decorate(handler: H) -> H:
        async def endpoint(**kwargs: Any) -> Response:
            try:
                await read_body_first()
                return await handler(**kwargs)
            except BodyTooLarge as exc:
                return _too_large(exc, family)
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
    if isinstance(app, QuartTrio):
        track_bodies(app)

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
