"""``POST /chat`` on the listener's fast path (homeserver/modules/scaibot/direct_chat.py):
HTTP/1.1 framing as h11 parses it, keep-alive back to the router, the same answers as the
Quart route (run against both), hand-offs, metrics. The rest of tests/scaibot runs on the
fast path too (it is on by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from homeserver.http.direct import DirectServer
from tests.homeserver.test_direct_sse import Client
from tests.scaibot.support import (
    BASE,
    Env,
    Stream,
    active_bot,
    bearer,
    chat,
    chat_then_hang_up,
    create_bot,
    eventually,
    mint,
    scaibot_env,
    transcript,
    user,
)
from tests.support import User, envelope_error


def _fast(env: Env) -> DirectServer:
    assert env.running.direct_sse is not None
    return env.running.direct_sse


def _post(token: str, body: dict[str, Any] | bytes, path: str = f"{BASE}/chat") -> bytes:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    head = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _events(body: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in body.decode().strip("\n").split("\n\n"):
        name, data = block.split("\n", 1)
        assert name.startswith("event: "), block
        assert data.startswith("data: "), block
        events.append((name[7:], orjson.loads(data[6:])))
    return events


async def test_a_chat_is_written_by_the_fast_path_and_the_connection_kept(tmp_path: Path) -> None:
    async with scaibot_env(tmp_path) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        token = (await mint(env, owner, bot["id"]))["token"]
        client = Client(await trio.open_tcp_stream(env.running.host, env.running.port))
        response, body = await client.exchange(
            _post(token, {"bot_id": bot["id"], "message": "one two"})
        )
        headers = {k.decode(): v.decode() for k, v in response.headers}
        assert response.status_code == 200
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"] == "text/event-stream"
        assert (headers["cache-control"], headers["x-accel-buffering"]) == ("no-cache", "no")
        assert headers["x-request-id"].startswith("req_")
        events = _events(body)
        names = [name for name, _ in events]
        assert names == ["start", "token", "token", "token", "done"]
        assert "".join(d["delta"] for n, d in events if n == "token") == "echo: one two"
        cid = events[0][1]["conversation_id"]
        # The same connection: the next message (fast path), then the transcript (Quart).
        _, body = await client.exchange(
            _post(token, {"bot_id": bot["id"], "conversation_id": cid, "message": "three"})
        )
        assert _events(body)[0][1]["conversation_id"] == cid
        get = f"GET {BASE}/conversations/{cid} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}"
        response, body = await client.exchange((get + "\r\n\r\n").encode())
        assert response.status_code == 200
        messages = orjson.loads(body)["data"]["messages"]
        assert [m["content"] for m in messages] == [
            "one two",
            "echo: one two",
            "three",
            "echo: three",
        ]
        assert (_fast(env).served, _fast(env).handed_off) == (2, 0)
        await client.stream.aclose()


async def _outcomes(env: Env) -> list[Any]:
    """The same requests on either transport: what a client sees of each."""
    owner = await user(env, "owner", admin=True)
    bot = await active_bot(env, owner)
    draft = await create_bot(env, owner, slug="draft")
    other = await active_bot(env, owner, slug="other")
    visitor = bearer((await mint(env, owner, bot["id"], visitor_id="v1"))["token"])
    narrow = await env.api.ok(
        "POST", "/v1/api-keys", owner, status=201, json={"name": "k", "scopes": ["rooms:read"]}
    )
    ask = {"bot_id": bot["id"], "message": "hi there"}
    cases: list[tuple[User | None, dict[str, Any], dict[str, str] | None]] = [
        (visitor, ask, None),
        (owner, ask, {"include_system_prompt": "true"}),
        (None, ask, None),
        (bearer("nope"), ask, None),
        (bearer(narrow["key"]), ask, None),
        (owner, {"bot_id": "bot_nope", "message": "hi"}, None),
        (owner, {"bot_id": draft["id"], "message": "hi"}, None),
        (visitor, {"bot_id": other["id"], "message": "hi"}, None),
        (owner, {**ask, "conversation_id": "cnv_nope"}, None),
        (owner, {"message": "hi"}, None),  # handed to Quart on the fast path
        (owner, ask, {"include_system_prompt": "maybe"}),  # handed to Quart too
        (visitor, ask, None),
        (visitor, ask, None),  # the visitor's third message in a minute: 429
    ]
    seen: list[Any] = []
    for who, body, params in cases:
        s: Stream = await chat(env, who, body, params=params)
        if s.body is not None:
            seen.append(
                (
                    s.status,
                    s.body["error"]["code"],
                    s.headers.get("retry-after") is not None,
                    s.headers["x-request-id"] == s.body["meta"]["request_id"],
                )
            )
        else:
            seen.append((s.status, s.names(), s.text))
    # A visitor closing the stream: the answer so far is stored as cancelled.
    hung = await chat_then_hang_up(
        env, (await mint(env, owner, bot["id"]))["token"], {**ask, "message": "a b c d"}, 1
    )

    async def stored() -> Any:
        t = await transcript(env, owner, hung.first("start")["conversation_id"])
        return t["messages"][1] if len(t["messages"]) == 2 else None

    seen.append((await eventually(stored))["finish_reason"])
    return seen


async def test_answers_match_the_quart_route(tmp_path: Path) -> None:
    runs = {}
    for direct in (True, False):
        async with scaibot_env(
            tmp_path / str(direct),
            direct_sse=direct,
            visitor_messages_per_minute=2,
            echo_delay_ms=20,
        ) as env:
            runs[direct] = await _outcomes(env)
            if direct:
                assert (_fast(env).served, _fast(env).handed_off) == (12, 2)
            else:
                assert env.running.direct_sse is None or _fast(env).served == 0
    assert runs[True] == runs[False]
    seen = runs[True]
    assert seen[0] == (200, ["start", "token", "token", "token", "done"], "echo: hi there")
    assert seen[1][1][:2] == ["start", "system_prompt"]
    assert seen[2][:2] == (401, "AUTH_TOKEN_MISSING")
    assert seen[5][:2] == (404, "BOT_NOT_FOUND")
    assert seen[9][:2] == seen[10][:2] == (422, "VALIDATION_ERROR")
    assert seen[12][:3] == (429, "RATE_LIMITED", True)
    assert all(case[3] for case in [*seen[2:11], seen[12]] if isinstance(case[1], str))
    assert seen[-1] == "cancelled"


async def test_what_is_not_plainly_a_chat_goes_to_quart(tmp_path: Path) -> None:
    async with scaibot_env(tmp_path) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        token = owner.access_token
        async with httpx.AsyncClient(base_url=env.running.base_url, timeout=30) as client:
            auth = {"Authorization": f"Bearer {token}"}
            bad = await client.post(f"{BASE}/chat", headers=auth, content=b'{"bot_id": ')
            envelope_error(bad, 422, "VALIDATION_ERROR")
            limit = _fast(env).limit
            big = await client.post(f"{BASE}/chat", headers=auth, content=b" " * (limit + 1))
            assert big.status_code in (413, 422)
            escaped = await client.post(
                f"{BASE}/%63hat", headers=auth, json={"bot_id": bot["id"], "message": "hi"}
            )
            assert escaped.status_code == 200
            assert b"event: done" in escaped.content
        assert (_fast(env).served, _fast(env).handed_off) == (0, 2)


async def test_fast_path_chats_are_counted_like_quart_ones(tmp_path: Path) -> None:
    async with scaibot_env(tmp_path) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        assert (await chat(env, owner, {"bot_id": bot["id"], "message": "hi"})).status == 200
        missing = await chat(env, owner, {"bot_id": "bot_nope", "message": "hi"})
        assert missing.status == 404
        metrics = env.running.metrics
        assert metrics is not None

        def count(status: str) -> float | None:
            labels = {"method": "POST", "route": f"{BASE}/chat", "status": status}
            return metrics.registry.get_sample_value("homeserver_http_requests_total", labels)

        assert (count("200"), count("404")) == (1.0, 1.0)
        assert _fast(env).served == 2
