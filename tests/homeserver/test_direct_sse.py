"""The listener's fast path for streamed session replies (homeserver/http/direct_sessions.py):
HTTP/1.1 framing (parsed by h11 as a client would), keep-alive back to the router, the
same refusals as the Quart route (run against both), hand-offs, revocation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio

from homeserver.http.direct import DirectServer
from homeserver.http.direct_sessions import ATTACH_ROUTE, SEND_ROUTE, match
from tests.homeserver.sessions_support import Env, Sse, read_sse, session_env, stored_reply
from tests.homeserver.test_tenants_scopes import as_user, key
from tests.support import User, envelope_error


def _fast(env: Env) -> DirectServer:
    assert env.running.direct_sse is not None
    return env.running.direct_sse


async def _session(env: Env, model: str = "dev/echo", user: User | None = None) -> str:
    data = await env.api.ok(
        "POST", "/v1/sessions", user or env.user, status=201, json={"model": model}
    )
    return str(data["id"])


def _post(sid: str, token: str, body: dict[str, Any], *extra: str) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        f"POST /v1/sessions/{sid}/messages HTTP/1.1",
        "Host: test",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class Client:
    """One raw connection, its responses parsed by h11 (strict about the framing)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def exchange(self, raw: bytes) -> tuple[h11.Response, bytes]:
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        # h11 must know what was asked; the bytes on the wire are ours, exactly.
        head, _, body = raw.partition(b"\r\n\r\n")
        line, *fields = head.decode().split("\r\n")
        method, target, _ = line.split(" ")
        headers = [(f.split(": ", 1)[0], f.split(": ", 1)[1]) for f in fields]
        self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            self.h11.send(h11.Data(data=body))
        self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(raw)
        response: h11.Response | None = None
        data = bytearray()
        with trio.fail_after(10):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert response is not None
                    return response, bytes(data)
                else:
                    raise AssertionError(event)

    async def closed(self) -> bool:
        with trio.fail_after(5):
            return await self.stream.receive_some(1) == b""


async def _client(env: Env) -> Client:
    return Client(await trio.open_tcp_stream(env.running.host, env.running.port))


def _fresh(env: Env) -> httpx.AsyncClient:
    """A client of its own (each refusal on a new connection)."""
    return httpx.AsyncClient(base_url=env.running.base_url, timeout=30)


async def _once(env: Env, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with _fresh(env) as client:
        return await client.request(method, url, **kwargs)


def _headers(response: h11.Response) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in response.headers}


def _events(body: bytes) -> Sse:
    sse = Sse()
    sse.buffer = body.decode()
    from tests.homeserver.sessions_support import feed

    for block in sse.buffer.split("\n\n"):
        feed(sse, block)
    return sse


async def test_a_streamed_reply_is_chunked_sse_written_by_the_fast_path(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        client = await _client(env)
        raw = _post(sid, env.user.access_token, {"content": "one two", "stream": True})
        response, body = await client.exchange(raw)
        headers = _headers(response)
        assert response.status_code == 200
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-request-id"].startswith("req_")
        assert headers["x-user-message-id"].startswith("msg_")
        sse = _events(body)
        assert sse.done
        assert body.endswith(b"data: [DONE]\n\n")
        assert sse.text == "echo: one two"
        assert {c["id"] for c in sse.chunks} == {headers["x-message-id"]}
        assert sse.chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert sse.finish_reason == "stop"
        stored = await stored_reply(env.api, env.user, sid)
        assert stored is not None
        assert (stored["id"], stored["content"]) == (headers["x-message-id"], sse.text)
        # The same connection: a re-attach (fast path), then any other request (Quart).
        again, replay = await client.exchange(
            f"GET /v1/sessions/{sid}/messages/{stored['id']}/stream HTTP/1.1\r\n"
            f"Host: test\r\nAuthorization: Bearer {env.user.access_token}\r\n\r\n".encode()
        )
        assert again.status_code == 200
        assert _events(replay).text == sse.text
        health, data = await client.exchange(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert health.status_code == 200
        assert json.loads(data)["data"] == {"healthy": True}
        assert (_fast(env).served, _fast(env).handed_off) == (2, 0)
        await client.stream.aclose()


async def test_connection_close_is_honoured_and_pipelined_requests_wait(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        one, two = await _session(env), await _session(env)
        token = env.user.access_token
        stream = await trio.open_tcp_stream(env.running.host, env.running.port)
        # Two requests in one write: the second is read while the first streams.
        await stream.send_all(
            _post(one, token, {"content": "a", "stream": True})
            + _post(two, token, {"content": "b", "stream": True}, "Connection: close")
        )
        received = bytearray()
        async with stream:
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    received += chunk
        parser = h11.Connection(h11.CLIENT)
        texts = []
        for _ in range(2):
            if parser.our_state is h11.DONE:
                parser.start_next_cycle()
            parser.send(h11.Request(method="POST", target="/", headers=[("Host", "t")]))
            parser.send(h11.EndOfMessage())
            parser.receive_data(bytes(received))
            received.clear()
            body = bytearray()
            while not isinstance(event := parser.next_event(), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    body += event.data
            texts.append(_events(bytes(body)).text)
        assert texts == ["echo: a", "echo: b"]
        assert _fast(env).served == 2


@pytest.mark.parametrize("direct", [True, False])
async def test_refusals_match_the_quart_route(tmp_path: Path, direct: bool) -> None:
    async with session_env(tmp_path / "d", direct_sse=direct) as env:
        sid = await _session(env)
        closed = await _session(env)
        await env.api.ok("PATCH", f"/v1/sessions/{closed}", env.user, json={"status": "closed"})
        busy = await _session(env, "up/hang")
        other = await env.api.register("other")
        narrow = await key(env.api, env.user, scopes=["rooms:read"])
        cases: list[tuple[str, dict[str, Any], dict[str, str], int, str]] = [
            (sid, {"content": "x"}, {}, 401, "AUTH_TOKEN_MISSING"),
            (sid, {"content": "x"}, {"Authorization": "Bearer nope"}, 401, "AUTH_TOKEN_INVALID"),
            (sid, {"content": "x"}, as_user(narrow).auth, 403, "AUTH_INSUFFICIENT_SCOPE"),
            (sid, {"content": "x"}, other.auth, 404, "SESSION_NOT_FOUND"),
            ("sess_nope", {"content": "x"}, env.user.auth, 404, "SESSION_NOT_FOUND"),
            (closed, {"content": "x"}, env.user.auth, 409, "SESSION_CLOSED"),
            (sid, {"content": "x", "max_tokens": 0}, env.user.auth, 422, "VALIDATION_ERROR"),
            (sid, {}, env.user.auth, 422, "VALIDATION_ERROR"),
        ]
        async with (
            _fresh(env) as client,
            client.stream(
                "POST",
                f"/v1/sessions/{busy}/messages",
                headers=env.user.auth,
                json={"content": "hi", "stream": True},
            ) as generating,
        ):
            await read_sse(generating, Sse(), content_chunks=1)
            cases.append((busy, {"content": "x"}, env.user.auth, 409, "SESSION_BUSY"))
            for session_id, body, headers, status, code in cases:
                r = await _once(
                    env,
                    "POST",
                    f"/v1/sessions/{session_id}/messages",
                    headers=headers,
                    json={**body, "stream": True},
                )
                error = envelope_error(r, status, code)
                assert r.headers["x-request-id"] == r.json()["meta"]["request_id"]
                if body.get("max_tokens") == 0:
                    assert error["message"].startswith("max_tokens")
            await env.api.ok("POST", f"/v1/sessions/{busy}/stop", env.user)
        r = await _once(
            env, "GET", f"/v1/sessions/{sid}/messages/msg_nope/stream", headers=env.user.auth
        )
        envelope_error(r, 404, "SESSION_MESSAGE_NOT_FOUND")
        if direct:
            # Every one of them answered by the fast path (and the re-attach, the stream).
            assert (_fast(env).served, _fast(env).handed_off) == (len(cases) + 2, 0)


async def test_what_is_not_plainly_a_stream_goes_to_quart(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        url, auth = f"/v1/sessions/{sid}/messages", env.user.auth
        # Not streamed: the usual JSON reply.
        r = await _once(env, "POST", url, headers=auth, json={"content": "plain"})
        assert r.json()["data"]["content"] == "echo: plain"
        # Malformed JSON, a body over the limit: Quart's refusals, as before.
        bad = await _once(env, "POST", url, headers=auth, content=b'{"stream": true,')
        envelope_error(bad, 422, "VALIDATION_ERROR")
        limit = env.running.direct_sse.limit if env.running.direct_sse else 0
        big = await _once(env, "POST", url, headers=auth, content=b" " * (limit + 1))
        envelope_error(big, 413, "SW_CONTENT_TOO_LARGE")
        assert _fast(env).handed_off == 3
        assert _fast(env).served == 0

        # A chunked upload of a streamed request: Quart streams it, the same bytes.
        async def body() -> Any:
            yield json.dumps({"content": "chunky", "stream": True}).encode()

        async with (
            _fresh(env) as client,
            client.stream("POST", url, headers=auth, content=body()) as s,
        ):
            sse = await read_sse(s, Sse())
        assert (sse.text, sse.done) == ("echo: chunky", True)
        assert _fast(env).served == 0


async def test_revoking_the_credential_ends_the_stream_and_the_reply_is_kept(
    tmp_path: Path,
) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/hang")
        secret = await key(env.api, env.user, scopes=["models:use"])
        keys = await env.api.ok("GET", "/v1/api-keys", env.user)
        key_id = next(k["id"] for k in keys["items"] if k["scopes"] == ["models:use"])
        async with (
            _fresh(env) as client,
            client.stream(
                "POST",
                f"/v1/sessions/{sid}/messages",
                headers=as_user(secret).auth,
                json={"content": "hi", "stream": True},
            ) as r,
        ):
            first = await read_sse(r, Sse(), content_chunks=2)
            await env.api.ok("DELETE", f"/v1/api-keys/{key_id}", env.user)
            with trio.fail_after(5):
                rest = await read_sse(r, first)
        assert rest.done
        assert [e["error"]["code"] for e in rest.errors] == ["AUTH_TOKEN_INVALID"]
        assert rest.text == "Hello there"
        # The reply itself goes on (here: until stopped) and is stored.
        stopped = await env.api.ok("POST", f"/v1/sessions/{sid}/stop", env.user)
        assert stopped["content"] == "Hello there"
        stored = await stored_reply(env.api, env.user, sid)
        assert stored is not None
        assert stored["finish_reason"] == "cancelled"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"POST /v1/sessions/sess_1/messages HTTP/1.1", "send"),
        (b"POST /v1/sessions/sess_1/messages?x=1 HTTP/1.1", "send"),
        (b"GET /v1/sessions/sess_1/messages/msg_2/stream HTTP/1.1", "attach"),
        (b"POST /v1/sessions/sess_1/messages HTTP/1.0", None),
        (b"POST /v1/sessions/sess_1/messages/ HTTP/1.1", None),
        (b"POST /v1/sessions//messages HTTP/1.1", None),
        (b"POST /v1/sessions/sess%31/messages HTTP/1.1", None),
        (b"PUT /v1/sessions/sess_1/messages HTTP/1.1", None),
        (b"GET /v1/sessions/sess_1/messages HTTP/1.1", None),
        (b"POST /v1/sessions/sess_1/messages/msg_2/stream HTTP/1.1", None),
        (b"GET /v1/sessions/sess_1/messages//stream HTTP/1.1", None),
        (b"GET /v1/sessions/sess_1/stop HTTP/1.1", None),
        (b"POST /v1/sessions HTTP/1.1", None),
        (b"POST  /v1/sessions/sess_1/messages HTTP/1.1", None),
    ],
)
def test_which_request_lines_the_fast_path_takes(line: bytes, kind: str | None) -> None:
    target = match(line + b"\r\nHost: x\r\n\r\n")
    kinds = {SEND_ROUTE: "send", ATTACH_ROUTE: "attach"}
    assert (kinds[target.route] if target else None) == kind


async def test_httpx_keep_alive_client_streams_turn_after_turn(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=env.running.base_url, limits=limits) as client:
            for turn in range(3):
                async with client.stream(
                    "POST",
                    f"/v1/sessions/{sid}/messages",
                    headers=env.user.auth,
                    json={"content": f"turn {turn}", "stream": True},
                ) as r:
                    sse = await read_sse(r, Sse())
                assert (sse.text, sse.done) == (f"echo: turn {turn}", True)
        assert _fast(env).served == 3
        data = await env.api.ok("GET", f"/v1/sessions/{sid}", env.user)
        assert [m["content"] for m in data["messages"] if m["role"] == "assistant"] == [
            f"echo: turn {t}" for t in range(3)
        ]


async def test_hypercorn_hands_an_idle_connection_back_for_a_stream(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=env.running.base_url, limits=limits) as client:
            for turn in range(2):
                # A request for hypercorn first, then a stream on the same connection.
                got = await client.get(f"/v1/sessions/{sid}", headers=env.user.auth)
                assert got.status_code == 200
                async with client.stream(
                    "POST",
                    f"/v1/sessions/{sid}/messages",
                    headers=env.user.auth,
                    json={"content": f"turn {turn}", "stream": True},
                ) as r:
                    sse = await read_sse(r, Sse())
                assert (sse.text, sse.done) == (f"echo: turn {turn}", True)
            after = await client.get(f"/v1/sessions/{sid}", headers=env.user.auth)
        replies = [m["content"] for m in after.json()["data"]["messages"] if m["role"] != "user"]
        assert replies == ["echo: turn 0", "echo: turn 1"]
        assert _fast(env).served == 2
        assert env.running.http_stats.handed_back == 2  # the same connection, both times


async def test_a_stream_pipelined_behind_a_hypercorn_request_stays_with_hypercorn(
    tmp_path: Path,
) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        token = env.user.access_token
        client = await _client(env)
        async with client.stream:
            first = f"GET /v1/sessions/{sid} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}"
            second = _post(sid, token, {"content": "behind", "stream": True})
            # Both in one write: hypercorn holds the second's bytes; it answers it itself.
            await client.stream.send_all(first.encode() + b"\r\n\r\n" + second)
            received = bytearray()
            with trio.fail_after(10):
                while b"data: [DONE]" not in received:
                    received += await client.stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 200")
        assert b'{"content":" behind"}' in received
        assert _fast(env).served == 0
        assert env.running.http_stats.handed_back == 0


async def test_a_body_in_pieces_is_read_and_a_late_one_is_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from homeserver.http import direct

    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        raw = _post(sid, env.user.access_token, {"content": "in pieces", "stream": True})
        head, body = raw.split(b"\r\n\r\n", 1)
        for late in (False, True):
            monkeypatch.setattr(direct, "BODY_TIMEOUT", 0.3 if late else 10.0)
            async with await trio.open_tcp_stream(env.running.host, env.running.port) as s:
                await s.send_all(head + b"\r\n\r\n" + body[:5])
                await trio.sleep(0.5 if late else 0.05)
                await s.send_all(body[5:])
                received = bytearray()
                with trio.fail_after(10):
                    while b"data: [DONE]" not in received:
                        received += await s.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 200")
            assert b'{"content":" pieces"}' in received
        # The first was the fast path's; the late one went to hypercorn (and Quart).
        assert (_fast(env).served, _fast(env).handed_off) == (1, 1)


async def test_fast_path_responses_are_counted_like_quart_ones(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env)
        async with _fresh(env) as client:
            async with client.stream(
                "POST",
                f"/v1/sessions/{sid}/messages",
                headers=env.user.auth,
                json={"content": "count me", "stream": True},
            ) as r:
                await read_sse(r, Sse())
            r = await client.post(
                "/v1/sessions/sess_nope/messages",
                headers=env.user.auth,
                json={"content": "x", "stream": True},
            )
            assert r.status_code == 404
        metrics = env.running.metrics
        assert metrics is not None

        def count(status: str) -> float | None:
            labels = {"method": "POST", "route": "/v1/sessions/{session_id}/messages"}
            return metrics.registry.get_sample_value(
                "homeserver_http_requests_total", {**labels, "status": status}
            )

        assert (count("200"), count("404")) == (1.0, 1.0)
        assert _fast(env).served == 2
