"""A small OpenAI-compatible upstream for tests: a real trio TCP server on port 0
speaking HTTP/1.1 (h11) and real SSE, with knobs per model id.

``Behaviour`` (chosen by the request's ``model``, i.e. the backend's
``upstream_id``) sets: the HTTP status, a delay before the first byte, the words
streamed and the delay between them, a stream that breaks midway (the socket
closes without ending the chunked body), a malformed chunk, a stream that
stops sending (``hang_after``) until its client goes away, and whether usage is
reported, and a gate (``gate_after``) that holds the rest of a stream until the test
opens ``Upstream.gate``. Every request is recorded with its body, its headers and the trio
time at which its client went away (``gone_at``), measured inside the server.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio


@dataclass(frozen=True)
class Behaviour:
    status: int = 200
    first_byte_delay: float = 0.0
    words: tuple[str, ...] = ("Hello", " there", ", friend")
    token_delay: float = 0.0
    break_after: int | None = None  # close the socket after this many chunks
    malformed_after: int | None = None  # send a non-JSON chunk after this many
    hang_after: int | None = None  # stop sending after this many chunks, until the client goes
    gate_after: int | None = None  # after this many chunks, wait for Upstream.gate to be set
    usage: tuple[int, int] | None = (11, 3)  # reported usage, or None
    finish_reason: str = "stop"
    send_done: bool = True
    content_type: str = "text/event-stream"


@dataclass
class Seen:
    """One request the upstream received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    chunks_sent: int = 0
    gone_at: float | None = None  # trio.current_time() when the client went away
    gone: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)  # first chunk sent


class Upstream:
    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.default = Behaviour()
        self.requests: list[Seen] = []
        self.port = 0
        self.new_request = trio.Event()
        self.gate = trio.Event()  # opens every gate_after stream

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def behaviour_for(self, model: str) -> Behaviour:
        return self.behaviours.get(model, self.default)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert request is not None
            seen = Seen(
                request.target.decode(),
                {k.decode().lower(): v.decode() for k, v in request.headers},
                json.loads(body or b"{}"),
            )
            self.requests.append(seen)
            wake, self.new_request = self.new_request, trio.Event()
            wake.set()
            await self._respond(stream, conn, seen)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _respond(self, stream: trio.SocketStream, conn: h11.Connection, seen: Seen) -> None:
        b = self.behaviour_for(str(seen.body.get("model", "")))
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                # The client sends nothing more; EOF (or a reset) means it went away.
                try:
                    while await stream.receive_some(4096):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                seen.gone_at = trio.current_time()
                seen.gone.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            # The client may go away mid-reply (watch records when).
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send_reply(stream, conn, seen, b)
            nursery.cancel_scope.cancel()

    async def _send_reply(
        self, stream: trio.SocketStream, conn: h11.Connection, seen: Seen, b: Behaviour
    ) -> None:
        await trio.sleep(b.first_byte_delay)
        if b.status != 200:
            payload = json.dumps({"error": {"message": f"upstream says {b.status}"}}).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
            await stream.send_all(conn.send(h11.Response(status_code=b.status, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=payload)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            return
        headers = [("content-type", b.content_type), ("transfer-encoding", "chunked")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        model = str(seen.body.get("model", ""))
        for i, word in enumerate(b.words):
            if b.break_after is not None and i == b.break_after:
                await stream.aclose()  # the body never ends: a broken stream
                return
            if b.hang_after is not None and i == b.hang_after:
                await trio.sleep_forever()
            if b.gate_after is not None and i == b.gate_after:
                await self.gate.wait()
            if b.malformed_after is not None and i == b.malformed_after:
                await self._event(stream, conn, "{not json")
                seen.chunks_sent += 1
                continue
            if i and b.token_delay:
                await trio.sleep(b.token_delay)
            await self._event(stream, conn, json.dumps(_chunk(model, {"content": word}, None)))
            seen.chunks_sent += 1
            seen.started.set()
        await self._event(stream, conn, json.dumps(_chunk(model, {}, b.finish_reason)))
        if b.usage is not None:
            usage = {"prompt_tokens": b.usage[0], "completion_tokens": b.usage[1]}
            final = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": []}
            await self._event(stream, conn, json.dumps({**final, "usage": usage}))
        if b.send_done:
            await self._event(stream, conn, "[DONE]")
        await stream.send_all(conn.send(h11.EndOfMessage()))

    @staticmethod
    async def _event(stream: trio.SocketStream, conn: h11.Connection, data: str) -> None:
        await stream.send_all(conn.send(h11.Data(data=f"data: {data}\n\n".encode())))


def _chunk(model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@asynccontextmanager
async def running_upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        try:
            yield upstream
        finally:
            nursery.cancel_scope.cancel()
