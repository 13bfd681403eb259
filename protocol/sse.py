"""The OpenAI ``chat.completion.chunk`` SSE encoding (CONTRACT 11).

A streamed reply is ``data: {chunk}\\n\\n`` lines ending ``data: [DONE]\\n\\n``;
the last chunk before ``[DONE]`` carries ``finish_reason`` and ``usage``. A
comment line (``: keepalive``) keeps proxies from closing a stream whose model
has not produced its first token yet. A failure is the final chunk with
``finish_reason: "error"``, then an ``event: error`` whose data is
``{"error": {code, message}}`` (rendered by ``homeserver.errors.error_event``),
then ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

import orjson

from protocol.llm import Usage

CHUNK_OBJECT = "chat.completion.chunk"
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


def chunk(
    completion_id: str,
    created: int,
    model: str,
    *,
    content: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` object."""
    delta: dict[str, str] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": completion_id,
        "object": CHUNK_OBJECT,
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage.to_dict()
    return body


def encode_data(payload: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event (compact JSON never contains a newline)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_event(event: str, payload: dict[str, Any]) -> bytes:
    """A named SSE event, e.g. ``event: error``."""
    if not event.isascii() or not event.isidentifier():
        raise ValueError(f"bad SSE event name {event!r}")
    return f"event: {event}\n".encode() + encode_data(payload)


def encode_error(error: dict[str, Any]) -> bytes:
    """The ``error`` event carrying a rendered ``{code, message, ...}``."""
    return encode_event("error", {"error": error})


def encode_comment(text: str = "keepalive") -> bytes:
    return b": " + " ".join(text.split()).encode() + b"\n\n"


class ContentChunks:
    """Pre-encoded content chunks of one reply: ``encode_data(chunk(..., content=c))``.

    Everything but the delta's text is the same in every chunk of a reply, so it is
    encoded once; a delta then costs one ``orjson.dumps`` of its string and two joins.
    The bytes are exactly those of :func:`encode_data` (a test checks it).
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        marker = "\x00"
        whole = encode_data(chunk(completion_id, created, model, content=marker))
        # The content is the last string in the chunk (only finish_reason: null follows).
        head, _, tail = whole.rpartition(orjson.dumps(marker))
        self._head, self._tail = head, tail

    def encode(self, content: str) -> bytes:
        return self._head + orjson.dumps(content) + self._tail

    def encode_many(self, contents: list[str]) -> bytes:
        """Several deltas, one chunk each, as one write."""
        if not contents:
            return b""
        sep = self._tail + self._head
        return self._head + sep.join(map(orjson.dumps, contents)) + self._tail
