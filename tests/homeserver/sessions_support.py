"""A server wired to a real test upstream, and an SSE reader for session replies."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conf.sections import BackendSettings, ModelEntry, ModelsSettings, SessionsSettings
from homeserver.app import Running
from tests.support import Api, User, api_for, make_settings, start_server
from tests.support_upstream import Behaviour, Upstream, running_upstream

# slug -> (upstream model id, behaviour); all served by the backend "up".
BEHAVIOURS: dict[str, Behaviour] = {
    "fast": Behaviour(),
    "words": Behaviour(words=tuple(f" w{i}" for i in range(8)), gate_after=2),
    "hang": Behaviour(hang_after=2),
    "break": Behaviour(break_after=2),
    "malformed": Behaviour(malformed_after=1),
    "e500": Behaviour(status=500),
    "e404": Behaviour(status=404),
    "e401": Behaviour(status=401),
    "slow": Behaviour(first_byte_delay=0.5),
    "stall": Behaviour(first_byte_delay=30),
}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def models_for(up: Upstream) -> ModelsSettings:
    entries = tuple(ModelEntry(f"up/{name}", name, name) for name in BEHAVIOURS)
    entries += (ModelEntry("up/tiny", "fast", "tiny", context_window=400, max_output_tokens=100),)
    return ModelsSettings(
        dev_echo=True,
        dev_echo_delay_ms=1,
        backends=(
            BackendSettings(name="up", base_url=up.base_url, timeout_s=60, models=entries),
            BackendSettings(
                name="short",
                base_url=up.base_url,
                timeout_s=0.3,
                models=(ModelEntry("short/stall", "stall", "stall"),),
            ),
            BackendSettings(
                name="down",
                base_url=f"http://127.0.0.1:{_dead_port()}/v1",
                models=(ModelEntry("down/any", "any", "any"),),
            ),
        ),
    )


@dataclass
class Env:
    running: Running
    api: Api
    upstream: Upstream
    user: User


@asynccontextmanager
async def session_env(data_dir: Path, **sessions: Any) -> AsyncIterator[Env]:
    async with running_upstream() as up:
        up.behaviours = dict(BEHAVIOURS)
        settings = make_settings(
            data_dir, models=models_for(up), sessions=SessionsSettings(**sessions)
        )
        async with start_server(settings) as running, api_for(running) as api:
            yield Env(running, api, up, await api.register("owner"))


@dataclass
class Sse:
    """What a client saw of one SSE reply."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    source: AsyncIterator[str] | None = None
    buffer: str = ""

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content", "") for c in self.chunks)

    @property
    def finish_reason(self) -> str | None:
        return self.chunks[-1]["choices"][0]["finish_reason"] if self.chunks else None


def feed(sse: Sse, block: str) -> None:
    event, data = None, []
    for line in block.split("\n"):
        if line.startswith(":"):
            sse.comments.append(line[1:].strip())
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
    if not data:
        return
    payload = "\n".join(data)
    if payload == "[DONE]":
        sse.done = True
    elif event == "error":
        sse.errors.append(json.loads(payload))
    else:
        sse.chunks.append(json.loads(payload))


async def read_sse(response: httpx.Response, sse: Sse, *, content_chunks: int | None = None) -> Sse:
    """Read events into ``sse`` until ``[DONE]`` (or ``content_chunks`` content deltas).

    Call again with the same ``sse`` to go on reading the same response.
    """
    if sse.source is None:
        sse.source = response.aiter_text()
    while True:
        while "\n\n" in sse.buffer and not sse.done:
            block, sse.buffer = sse.buffer.split("\n\n", 1)
            feed(sse, block)
            with_content = [c for c in sse.chunks if c["choices"][0]["delta"].get("content")]
            if content_chunks is not None and len(with_content) >= content_chunks:
                return sse
        if sse.done:
            return sse
        try:
            sse.buffer += await sse.source.__anext__()
        except StopAsyncIteration:
            break
    return sse


async def stored_reply(api: Api, user: User, session_id: str) -> dict[str, Any] | None:
    data = await api.ok("GET", f"/v1/sessions/{session_id}", user)
    assistants = [m for m in data["messages"] if m["role"] == "assistant"]
    return assistants[-1] if assistants else None
