"""Per-request observability: one request id, the HTTP metrics, the access log line.

``before_request`` fixes the request's id (``shim.request_id`` hands the same
one to the envelope) and its start time; ``after_request`` adds
``X-Request-Id``, counts the request by method, route template and status, and,
with ``log_format = "json"``, writes one structured line.
"""

from __future__ import annotations

import re
import time

from quart import Quart, Response, g, request

from homeserver.http.shim import request_id
from homeserver.observe import logs
from homeserver.observe.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def template(rule: str) -> str:
    """A Quart rule as an OpenAPI path: ``/v1/rooms/<room_id>`` -> ``/v1/rooms/{room_id}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def install(app: Quart, metrics: Metrics | None, *, access_log: bool) -> None:
    @app.before_request
    async def started() -> None:
        g.request_started = time.perf_counter()
        request_id()

    @app.after_request
    async def finished(response: Response) -> Response:
        rid = request_id()
        response.headers["X-Request-Id"] = rid
        start: float = getattr(g, "request_started", time.perf_counter())
        seconds = time.perf_counter() - start
        rule = request.url_rule
        route = template(rule.rule) if rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "OTHER"
        record(metrics, access_log, method, route, response.status_code, rid, request.path, seconds)
        return response


def record(
    metrics: Metrics | None,
    access_log: bool,
    method: str,
    route: str,
    status: int,
    rid: str,
    path: str,
    seconds: float,
) -> None:
    """Count one answered request and, with ``access_log``, write its access line."""
    if metrics is not None:
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_seconds.labels(method, route).observe(seconds)
    if access_log:
        logs.access(
            "http request",
            kind="http",
            request_id=rid,
            method=method,
            route=route,
            path=path[:512],
            status=status,
            duration_ms=round(seconds * 1000, 3),
        )
