"""Server-sent events: a reply followed as OpenAI ``chat.completion.chunk`` lines.

The body starts at once with a role chunk (so the client and any proxy see the
stream open), then one chunk per delta as the generation produces them; while
no token has come yet it carries a ``: keepalive`` comment every
``heartbeat`` seconds. The end is a chunk with ``finish_reason`` and ``usage``
(and, for a failure, ``finish_reason: "error"`` followed by an ``error`` event
rendered by :func:`homeserver.errors.error_event`), then ``data: [DONE]``.

The body only *reads* the generation: if the client goes away, Quart cancels
this generator and the reply carries on in its own task.

:class:`ReplyBody` is the one place that turns a generation into these bytes; both
transports use it: :func:`follow_reply` (the Quart response body) and the direct
writer of homeserver/http/direct_sessions.py (the listener's fast path).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator

import trio
from quart import Response

from bridges.ticks import Ticks
from homeserver.errors import error_event
from homeserver.sessions import Generation
from protocol.errors import Family
from protocol.sse import DONE, KEEPALIVE, ContentChunks, chunk, encode_data, encode_error

COALESCE_S = 0.005  # the most a delta waits for company before it is written

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def sse_response(body: AsyncGenerator[bytes, None], headers: dict[str, str]) -> Response:
    response = Response(
        body, status=200, content_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )
    response.timeout = None  # a reply may take longer than Quart's RESPONSE_TIMEOUT
    return response


def _end(gen: Generation, family: Family) -> bytes:
    reason = "error" if gen.error is not None else gen.finish_reason
    out = encode_data(
        chunk(gen.message_id, gen.created, gen.model, finish_reason=reason, usage=gen.usage)
    )
    if gen.error is not None:
        out += encode_error(error_event(gen.error, family))
    return out + DONE


class ReplyBody:
    """The SSE bytes of one reply, in order: the opening role chunk, deltas, the end.

    :meth:`take` returns everything the generation produced since the last call (one
    chunk per delta) and, once it has finished, the end (final chunk, error event,
    ``[DONE]``) exactly once. Nothing here waits or writes.
    """

    __slots__ = ("_chunks", "_family", "ended", "gen", "index")

    def __init__(self, gen: Generation, family: Family = "sg") -> None:
        self.gen = gen
        self.index = 0  # parts taken so far
        self.ended = False  # the end was taken
        self._family = family
        self._chunks = ContentChunks(gen.message_id, gen.created, gen.model)

    def opening(self) -> bytes:
        gen = self.gen
        return encode_data(
            chunk(gen.message_id, gen.created, gen.model, role="assistant", content="")
        )

    def take(self) -> bytes:
        gen = self.gen
        parts = gen.parts
        if self.index == len(parts):
            out = b""
        else:
            new = parts[self.index :]
            self.index += len(new)
            out = self._chunks.encode_many(new)
        if gen.finished and not self.ended:
            self.ended = True
            out += _end(gen, self._family)
        return out

    def cut(self, exc: BaseException) -> bytes:
        """The end of a body stopped before its reply ended: an ``error`` event, ``[DONE]``."""
        self.ended = True
        return encode_error(error_event(exc, self._family)) + DONE


async def follow_reply(
    gen: Generation,
    *,
    heartbeat: float,
    ticks: Ticks,
    family: Family = "sg",
    coalesce: float = COALESCE_S,
) -> AsyncGenerator[bytes, None]:
    """The SSE body for ``gen``: everything so far, then live, then the end.

    Deltas that arrive less than ``coalesce`` seconds after the previous write go out
    together in the next one (still one chunk each): a very fast model costs one
    socket write per ``coalesce`` per stream, not one per token. The coalescing wait is
    on ``ticks`` (shared per-millisecond timers, so it may last up to 1 ms longer), not a
    timer of its own per write. Content chunks are
    encoded from a per-reply template (:class:`protocol.sse.ContentChunks`).
    """
    body = ReplyBody(gen, family)
    yield body.opening()
    last_write = -coalesce  # the first delta never waits
    while True:
        # Heartbeats only until the first token.
        ready = await gen.wait_beyond(body.index, heartbeat if body.index == 0 else math.inf)
        if not ready:
            if body.index == 0:
                yield KEEPALIVE
            continue
        due = last_write + coalesce
        if due > trio.current_time() and not gen.finished:
            await ticks.sleep_until(due)
        out = body.take()
        if body.ended:
            yield out
            return
        if out:
            yield out
            last_write = trio.current_time()
