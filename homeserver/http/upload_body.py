"""Large request bodies for a few routes: a per-route size limit and back-pressure.

Quart gives every request one body limit (``MAX_CONTENT_LENGTH``, our
``max_request_bytes``, set in shim.install_fallbacks) fixed when the request
object is made, and its ASGI receive loop copies every chunk hypercorn hands
it into one buffer as fast as the client sends, whether the handler reads it
or not. For the upload route that would hold up to the whole file in memory.

:func:`allow_large_bodies` swaps in a connection class that, for the listed
(method, path) pairs only:

- gives the request body that path's own limit (counted over the whole
  stream, not only what is buffered), and
- stops taking chunks from hypercorn while more than :data:`HIGH_WATER` bytes
  wait unread. hypercorn's queue to the app is bounded, so the socket stops
  being read and TCP pushes back on the client: memory stays flat however
  large the upload.

Every other route keeps Quart's buffering (its handlers ``await`` the whole
body, which must never wait for a reader). For every request, a client
disconnect cancels the handler only while its response is unfinished (see
``_Connection.handle_messages``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import trio
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody
from werkzeug.exceptions import RequestEntityTooLarge

HIGH_WATER = 1 << 20


class TrackedBody(TrioBody):
    """Quart's buffered body, which also knows when the body ended on the wire.

    Once over its limit Quart's body stops buffering (and says so), but the
    bytes still arrive; ``wire_done`` is set when the last of them has (or the
    client left), so a 413 can wait for it and keep the connection usable.
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.limit = max_content_length
        self.expected = expected_content_length
        self.wire_done = trio.Event()


class StreamingBody(TrackedBody):
    """A request body with a total-size limit and a drained signal for back-pressure."""

    def __init__(self, expected_content_length: int | None, max_content_length: int) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._limit = max_content_length
        self._received = 0
        self._drained = trio.Event()

    def append(self, data: bytes) -> None:
        if data == b"" or self._must_raise is not None:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._must_raise = RequestEntityTooLarge()
            self.set_complete()
            return
        self._data.extend(data)
        self._has_data.set()

    async def __anext__(self) -> bytes:
        # Like Body.__anext__, but the limit error wins over the end of the body
        # (Body reports a body cut short by its limit as a normal end).
        if self._must_raise is None and not self._complete.is_set():
            await self._has_data.wait()
        if self._must_raise is not None:
            raise self._must_raise
        if self._complete.is_set() and len(self._data) == 0:
            raise StopAsyncIteration
        data = bytes(self._data)
        self._data.clear()
        self._has_data.clear()
        self._drained.set()
        return data

    async def wait_for_room(self) -> None:
        """Return once at most HIGH_WATER bytes wait unread (or the body is finished)."""
        while (
            len(self._data) > HIGH_WATER
            and self._must_raise is None
            and not self._complete.is_set()
        ):
            self._drained = trio.Event()
            await self._drained.wait()


class _Connection(TrioASGIHTTPConnection):
    limits: Mapping[tuple[str, str], int] = {}
    patterns: tuple[tuple[str, re.Pattern[str], int], ...] = ()
    _finished = False

    def _create_request_from_scope(self, send: Any) -> Any:
        request = super()._create_request_from_scope(send)
        limit = self.limits.get((request.method, request.path))
        if limit is None:
            for method, pattern, max_bytes in self.patterns:
                if request.method == method and pattern.fullmatch(request.path):
                    limit = max_bytes
                    break
        if limit is not None:
            request.body = StreamingBody(request.content_length, limit)
        else:
            request.body = TrackedBody(
                request.content_length, self.app.config["MAX_CONTENT_LENGTH"]
            )
        return request

    async def __call__(self, receive: Any, send: Any) -> None:
        async def tracked_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._finished = True
            await send(message)

        await super().__call__(receive, tracked_send)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, receive: Any
    ) -> None:
        body = request.body
        streaming = isinstance(body, StreamingBody)
        while True:
            if streaming:
                await body.wait_for_room()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                    body.wire_done.set()
            elif message["type"] == "http.disconnect":
                body.wire_done.set()
                break
        # quart-trio cancels the request here unconditionally. But hypercorn
        # also reports a disconnect while the last piece of a response that came
        # before the end of the request body is being sent (an early 413), and
        # cancelling then stops it closing the socket: the client hangs. Cancel
        # only when the client left before the response was complete.
        if not self._finished:
            nursery.cancel_scope.cancel()


def track_bodies(app: QuartTrio) -> None:
    """Every request body becomes a :class:`TrackedBody` (see shim.read_body_first)."""
    if not issubclass(app.asgi_http_class, _Connection):
        app.asgi_http_class = _Connection


def allow_large_bodies(app: QuartTrio, method: str, path: str, max_bytes: int) -> None:
    """Let ``method path`` (an exact path) take a streamed body of up to ``max_bytes``."""
    current: Mapping[tuple[str, str], int] = getattr(app.asgi_http_class, "limits", {})

    patterns = getattr(app.asgi_http_class, "patterns", ())

    class StreamingBodyConnection(_Connection):
        limits = {**current, (method.upper(), path): max_bytes}

    StreamingBodyConnection.patterns = patterns
    app.asgi_http_class = StreamingBodyConnection


def allow_large_bodies_matching(
    app: QuartTrio, method: str, pattern: re.Pattern[str], max_bytes: int
) -> None:
    """As :func:`allow_large_bodies`, for every path ``pattern`` matches in full
    (routes with a variable part, e.g. ``/bots/<bot_id>/documents``)."""
    current: Mapping[tuple[str, str], int] = getattr(app.asgi_http_class, "limits", {})
    patterns = getattr(app.asgi_http_class, "patterns", ())

    class StreamingBodyConnection(_Connection):
        limits = current

    StreamingBodyConnection.patterns = (*patterns, (method.upper(), pattern, max_bytes))
    app.asgi_http_class = StreamingBodyConnection
