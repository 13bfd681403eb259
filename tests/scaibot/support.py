"""ScaiBot test harness: a server with a movable clock, SSE parsing as a client does it,
bots, embed tokens, and participants of another tenant."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
import trio

from bridges.models.base import ChatModels
from conf import Settings
from conf.sections import ModelsSettings, ScaibotSettings
from homeserver import app
from homeserver.clock import system_ms
from homeserver.modules.scaibot.module import ScaiBotModule
from homeserver.modules.scaibot.ports import BotDeletionHook, Retriever
from protocol import ids
from storage import participants as pstore
from tests.support import Api, User, api_for, make_settings

BASE = "/v1/modules/scaibot"


class Clock:
    """The server's wall clock, movable forward (embed-token expiry)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return system_ms() + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)


@dataclasses.dataclass
class Env:
    running: app.Running
    api: Api
    clock: Clock
    data_dir: Path

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client


def _with_plugins(
    retriever: Retriever | None,
    wrap_models: Callable[[ChatModels], ChatModels] | None,
    deletion_hooks: tuple[BotDeletionHook, ...],
) -> Any:
    """A ``build_scaibot`` that plugs a retriever / model wrapper / hooks in (the seam)."""

    def build(
        settings: Settings,
        writer: Any,
        readers: Any,
        clock: Any,
        auth: Any,
        models: Any,
        *_knowledge: Any,  # the real knowledge index is not plugged in here
    ) -> ScaiBotModule:
        return ScaiBotModule(
            settings=settings.scaibot,
            data_dir=Path(settings.data_dir),
            writer=writer,
            readers=readers,
            clock=clock,
            authenticate=auth.authenticate,
            models=wrap_models(models) if wrap_models else models,
            max_request_bytes=settings.max_request_bytes,
            retriever=retriever,
            deletion_hooks=deletion_hooks,
        )

    return build


@asynccontextmanager
async def scaibot_env(
    tmp_path: Path,
    *,
    echo_delay_ms: int = 0,
    retriever: Retriever | None = None,
    wrap_models: Callable[[ChatModels], ChatModels] | None = None,
    deletion_hooks: tuple[BotDeletionHook, ...] = (),
    database_url: str | None = None,
    **scaibot: Any,
) -> AsyncIterator[Env]:
    with mock.patch.object(
        app, "build_scaibot", _with_plugins(retriever, wrap_models, deletion_hooks)
    ):
        async with _scaibot_env(tmp_path, echo_delay_ms, scaibot, database_url) as env:
            yield env


@asynccontextmanager
async def _scaibot_env(
    tmp_path: Path, echo_delay_ms: int, scaibot: dict[str, Any], database_url: str | None = None
) -> AsyncIterator[Env]:
    base = ScaibotSettings(**{"action_backoff_ms": 10, **scaibot})
    settings = make_settings(
        tmp_path / "data",
        database_url=database_url,
        models=ModelsSettings(dev_echo=True, dev_echo_delay_ms=echo_delay_ms),
        scaibot=base,
    )
    clock = Clock()
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(
            lambda task_status: app.run(settings, clock=clock, task_status=task_status)
        )
        try:
            async with api_for(running) as api:
                yield Env(running, api, clock, tmp_path / "data")
        finally:
            nursery.cancel_scope.cancel()


async def other_tenant_user(env: Env, name: str, *, admin: bool = False) -> User:
    """A participant of tenant ``ten_other`` with an access token."""
    return await user(env, name, admin=admin, tenant_id="ten_other")


async def user(
    env: Env, name: str, *, admin: bool = False, tenant_id: str = pstore.DEFAULT_TENANT
) -> User:
    """A participant with an access token, stored directly (no password hashing: fast)."""
    pid = ids.participant_id("human")
    secret = ids.secret_token(ids.ACCESS_TOKEN)
    now = system_ms()

    def txn(conn: Any) -> None:
        pstore.create_participant_txn(
            conn,
            participant_id=pid,
            username=name,
            display_name=name,
            participant_type="human",
            password_hash=None,
            is_admin=admin,
            now_ms=now,
            tenant_id=tenant_id,
        )
        pstore.store_token_txn(
            conn,
            secret=secret,
            participant_id=pid,
            kind="access",
            family_id="fam_x",
            now_ms=now,
            expires_at_ms=now + 3_600_000,
        )

    await env.running.writer.write(txn)
    return User(pid, secret, "", name)


def bearer(token: str) -> User:
    return User("?", token, "", "token")


async def create_bot(env: Env, owner: User, **fields: Any) -> dict[str, Any]:
    body = {"name": "Support", "slug": "support", "model": "dev/echo", **fields}
    data: dict[str, Any] = await env.api.ok("POST", f"{BASE}/bots", owner, status=201, json=body)
    return data


async def active_bot(env: Env, owner: User, **fields: Any) -> dict[str, Any]:
    return await create_bot(env, owner, status="active", **fields)


async def mint(env: Env, owner: User, bot_id: str, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = await env.api.ok(
        "POST", f"{BASE}/bots/{bot_id}/embed-token", owner, status=201, json=body
    )
    return data


@dataclasses.dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[tuple[str, Any]]
    body: Any = None  # the JSON error body when the request was refused before the stream

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def first(self, name: str) -> Any:
        return next(data for n, data in self.events if n == name)

    def all(self, name: str) -> list[Any]:
        return [data for n, data in self.events if n == name]

    @property
    def text(self) -> str:
        return "".join(d["delta"] for d in self.all("token"))


async def read_events(response: httpx.Response) -> AsyncGenerator[tuple[str, Any], None]:
    """Parse ``text/event-stream`` line by line, as a browser's EventSource does."""
    name, data = "message", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, orjson.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


async def chat(
    env: Env,
    who: User | None,
    body: dict[str, Any],
    *,
    params: dict[str, str] | None = None,
) -> Stream:
    """POST /chat and read the whole stream as an httpx client does."""
    headers = who.auth if who is not None else {}
    async with env.client.stream(
        "POST", f"{BASE}/chat", json=body, headers=headers, params=params
    ) as r:
        if r.headers.get("content-type", "").startswith("application/json"):
            await r.aread()
            return Stream(r.status_code, r.headers, [], r.json())
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        events = [event async for event in read_events(r)]
        return Stream(r.status_code, r.headers, events)


async def chat_then_hang_up(env: Env, token: str, body: dict[str, Any], tokens: int) -> Stream:
    """A browser tab closing mid-answer: read ``tokens`` token events over a plain
    socket, then close the connection."""
    payload = orjson.dumps(body)
    head = (
        f"POST {BASE}/chat HTTP/1.1\r\nHost: {env.running.host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(env.running.host, env.running.port)
    buf = b""
    try:
        await stream.send_all(head + payload)
        while buf.count(b"event: token") < tokens:
            chunk = await stream.receive_some(65536)
            assert chunk, buf
            buf += chunk
    finally:
        await stream.aclose()
    text = buf.split(b"\r\n\r\n", 1)[1].decode()
    # Chunked transfer encoding: keep only the event lines.
    lines = [ln for ln in text.splitlines() if ln.startswith(("event:", "data:"))]
    events = []
    for name, data in zip(lines[::2], lines[1::2], strict=False):
        with contextlib.suppress(orjson.JSONDecodeError):  # the last one may be cut
            events.append((name[6:].strip(), orjson.loads(data[5:])))
    return Stream(200, httpx.Headers(), events)


async def eventually(check: Callable[[], Any], *, seconds: float = 10.0) -> Any:
    """Poll an async ``check`` until it returns something truthy (background actions)."""
    with trio.fail_after(seconds):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(0.02)


async def transcript(env: Env, who: User, conversation_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await env.api.ok("GET", f"{BASE}/conversations/{conversation_id}", who)
    return data
