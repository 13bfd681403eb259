"""AI rooms: an in-process server with ``dev/echo`` plus scripted test backends.

``test/gated`` sends two words, then holds until the test opens its gate
(so cancel and stop windows need no sleeps); ``test/fail`` sends two words and
then fails like a broken upstream (502 ``BACKEND_ERROR``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.trio.client import ClientConnection, connect

from bridges.models import ModelRegistry
from bridges.models.base import Delta, Finish, StreamItem
from bridges.models.echo import ECHO_MODEL, EchoBackend
from conf import Settings
from conf.sections import ModelEntry
from homeserver import app
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, Usage
from tests.support import Api, User, api_for, make_settings

STEP = 10.0
GATED = ModelEntry("test/gated", "gated", "Gated test model", 8192, 1024)
FAILING = ModelEntry("test/fail", "fail", "Failing test model", 8192, 1024)


class ScriptedBackend:
    """Two words at once, then (gated) wait for the gate or (failing) raise."""

    name = "test"

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.prompts: list[list[ChatMessage]] = []
        self.closed = 0

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        model: ModelEntry,
        max_tokens: int,
        temperature: float | None,
    ) -> AsyncGenerator[StreamItem, None]:
        self.prompts.append(list(messages))
        try:
            yield Delta("part")
            yield Delta(" one")
            if model.slug == FAILING.slug:
                raise ApiError(ErrorCode.BACKEND_ERROR, "upstream sent a malformed stream")
            await self.gate.wait()
            yield Delta(" end")
            yield Finish("stop", Usage(5, 3))
        finally:
            self.closed += 1


@dataclasses.dataclass
class Env:
    running: app.Running
    api: Api
    backend: ScriptedBackend
    admin: User

    async def ai(self, name: str = "helper", model: str = "dev/echo", **body: Any) -> str:
        data = await self.api.ok(
            "POST",
            "/v1/ai/participants",
            self.admin,
            status=201,
            json={"name": name, "type": "bot", "model": model, **body},
        )
        return str(data["id"])


def registry(backend: ScriptedBackend) -> ModelRegistry:
    return ModelRegistry([(EchoBackend(0), ECHO_MODEL), (backend, GATED), (backend, FAILING)])


@asynccontextmanager
async def ai_server(data_dir: Path, **overrides: Any) -> AsyncIterator[Env]:
    settings: Settings = make_settings(data_dir, rate_limit_messages=0, **overrides)
    backend = ScriptedBackend()
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(
            lambda task_status: app.run(settings, models=registry(backend), task_status=task_status)
        )
        async with api_for(running) as api:
            yield Env(running, api, backend, await _admin(api))
        nursery.cancel_scope.cancel()


async def _admin(api: Api) -> User:
    """The first registrant in --dev is the tenant admin; after a restart, log in again."""
    r = await api.client.post(
        "/v1/auth/register", json={"username": "admin", "password": "password123"}
    )
    if r.status_code == 201:
        d = r.json()["data"]
        return User(d["participant_id"], d["access_token"], d["refresh_token"], "admin")
    return await login(api, "admin")


async def login(api: Api, username: str) -> User:
    """A fresh access token (a second connection needs its own token)."""
    r = await api.client.post(
        "/v1/auth/token",
        json={"grant_type": "password", "username": username, "password": "password123"},
    )
    d = r.json()["data"]
    me = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {d['access_token']}"})
    return User(
        me.json()["data"]["participant_id"], d["access_token"], d["refresh_token"], username
    )


@pytest.fixture
async def env(tmp_path: Path, database_url: str | None) -> AsyncIterator[Env]:
    async with ai_server(tmp_path / "data", database_url=database_url) as e:
        yield e


# --------------------------------------------------------------------------- websockets


@asynccontextmanager
async def open_ws(
    running: app.Running, user: User, since: int | None = None
) -> AsyncIterator[ClientConnection]:
    url = f"ws://{running.host}:{running.port}/v1/stream?token={user.access_token}"
    if since is not None:
        url += f"&since={since}"
    async with connect(
        url, compression=None, ping_interval=None, open_timeout=STEP, close_timeout=2
    ) as ws:
        frame = await recv(ws)
        assert frame["type"] == "hello", frame
        yield ws


async def recv(ws: ClientConnection) -> dict[str, Any]:
    with trio.fail_after(STEP):
        while True:
            frame = json.loads(await ws.recv())
            assert isinstance(frame, dict)
            if frame.get("type") != "presence":
                return frame


def is_ai_frame(frame: dict[str, Any]) -> bool:
    return frame["type"] in ("swp.ai.status", "swp.room.message.chunk")


async def until(ws: ClientConnection, stop: Any) -> list[dict[str, Any]]:
    """Frames up to and including the first for which ``stop(frame)`` is true."""
    frames = []
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if stop(frame):
            return frames


def status_is(status: str, draft_id: str | None = None) -> Any:
    def check(frame: dict[str, Any]) -> bool:
        return (
            frame["type"] == "swp.ai.status"
            and frame["status"] == status
            and (draft_id is None or frame["draft_id"] == draft_id)
        )

    return check


def ai_message(frames: list[dict[str, Any]], ai_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "swp.room.message" and f["sender_id"] == ai_id]
