"""Streamed session replies against a real upstream: SSE shape, disconnect, re-attach,
stop, midway failures, the error mapping, heartbeats, isolation, restart (CONTRACT 10, 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.homeserver.sessions_support import Env, Sse, read_sse, session_env, stored_reply
from tests.support import User, envelope_error, envelope_ok, make_settings, start_server


async def _session(env: Env, model: str, user: User | None = None) -> str:
    data = await env.api.ok(
        "POST", "/v1/sessions", user or env.user, status=201, json={"model": model}
    )
    return str(data["id"])


def _stream(env: Env, sid: str, content: str = "hi", **body: Any) -> Any:
    return env.api.client.stream(
        "POST",
        f"/v1/sessions/{sid}/messages",
        headers=env.user.auth,
        json={"content": content, "stream": True, **body},
    )


async def _wait_stored(env: Env, sid: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            reply = await stored_reply(env.api, env.user, sid)
            if reply is not None:
                return reply
            await trio.sleep(0.02)


@pytest.mark.parametrize("model", ["dev/echo", "up/fast"])
async def test_streamed_deltas_join_to_the_stored_reply(tmp_path: Path, model: str) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, model)
        async with _stream(env, sid, "say it again") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            message_id = r.headers["x-message-id"]
            sse = await read_sse(r, Sse())
        assert sse.done
        assert sse.errors == []
        first, last = sse.chunks[0], sse.chunks[-1]
        assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        for c in sse.chunks:
            assert c["object"] == "chat.completion.chunk"
            assert c["id"] == message_id
            assert c["model"] == model
            assert isinstance(c["created"], int)
        assert last["choices"][0]["finish_reason"] == "stop"
        assert set(last["usage"]) >= {"prompt_tokens", "completion_tokens"}
        assert all("usage" not in c for c in sse.chunks[:-1])
        stored = await stored_reply(env.api, env.user, sid)
        assert stored is not None
        assert stored["id"] == message_id
        assert stored["content"] == sse.text
        assert sse.text == ("echo: say it again" if model == "dev/echo" else "Hello there, friend")
        if model == "up/fast":
            assert stored["usage"] == {"prompt_tokens": 11, "completion_tokens": 3}
            assert env.upstream.requests[0].body["messages"][-1] == {
                "role": "user",
                "content": "say it again",
            }


async def test_a_disconnect_mid_reply_still_stores_the_whole_reply(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/words")
        async with _stream(env, sid) as r:
            seen = await read_sse(r, Sse(), content_chunks=2)
        assert not seen.done  # we left early, with the upstream held at its gate
        assert await stored_reply(env.api, env.user, sid) is None
        env.upstream.gate.set()
        reply = await _wait_stored(env, sid)
        assert reply["content"] == "".join(f" w{i}" for i in range(8))
        assert reply["finish_reason"] == "stop"
        assert env.upstream.requests[0].chunks_sent == 8


async def test_reattach_replays_then_follows_live(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/words")
        async with _stream(env, sid) as r:
            message_id = r.headers["x-message-id"]
            early = await read_sse(r, Sse(), content_chunks=2)
        session = await env.api.ok("GET", f"/v1/sessions/{sid}", env.user)
        assert session["generating_message_id"] == message_id
        async with env.api.client.stream(
            "GET", f"/v1/sessions/{sid}/messages/{message_id}/stream", headers=env.user.auth
        ) as again:
            assert again.status_code == 200
            replayed = await read_sse(again, Sse(), content_chunks=2)
            assert replayed.text == early.text  # what was sent so far...
            env.upstream.gate.set()
            whole = await read_sse(again, replayed)  # ...then live
        assert whole.done
        assert whole.text.startswith(early.text)
        assert whole.text == "".join(f" w{i}" for i in range(8))
        assert whole.finish_reason == "stop"
        stored = await _wait_stored(env, sid)
        assert stored["content"] == whole.text


async def test_stop_closes_the_upstream_within_100ms_and_stores_cancelled(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/hang")
        async with _stream(env, sid) as r:
            first = await read_sse(r, Sse(), content_chunks=2)
            assert first.text == "Hello there"
            seen = env.upstream.requests[0]
            assert not seen.gone.is_set()
            stopped_at = trio.current_time()
            out = await env.api.ok("POST", f"/v1/sessions/{sid}/stop", env.user)
            rest = await read_sse(r, first)
        assert seen.gone_at is not None
        assert seen.gone_at - stopped_at < 0.1
        assert out["stopped"] is True
        assert (out["finish_reason"], out["content"]) == ("cancelled", "Hello there")
        assert rest.done
        assert rest.finish_reason == "cancelled"
        stored = await stored_reply(env.api, env.user, sid)
        assert stored is not None
        assert (stored["content"], stored["finish_reason"]) == ("Hello there", "cancelled")
        assert stored["id"] == out["message_id"]


async def test_a_second_message_while_generating_is_busy(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/hang")
        async with _stream(env, sid) as r:
            await read_sse(r, Sse(), content_chunks=1)
            again = await env.api.call(
                "POST", f"/v1/sessions/{sid}/messages", env.user, json={"content": "more"}
            )
            envelope_error(again, 409, "SESSION_BUSY")
            await env.api.ok("POST", f"/v1/sessions/{sid}/stop", env.user)
        data = await env.api.ok("GET", f"/v1/sessions/{sid}", env.user)
        assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
        # The next message sees the cancelled partial reply as history.
        await env.api.ok("POST", f"/v1/sessions/{sid}/stop", env.user)
        env.upstream.behaviours["hang"] = env.upstream.behaviours["fast"]
        done = await env.api.ok(
            "POST", f"/v1/sessions/{sid}/messages", env.user, json={"content": "more"}
        )
        assert done["content"] == "Hello there, friend"
        sent = env.upstream.requests[-1].body["messages"]
        assert sent == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "more"},
        ]


async def test_a_midway_failure_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        for model in ("up/break", "up/malformed"):
            sid = await _session(env, model)
            async with _stream(env, sid) as r:
                sse = await read_sse(r, Sse())
            assert sse.done
            assert sse.finish_reason == "error"
            assert [e["error"]["code"] for e in sse.errors] == ["BACKEND_ERROR"]
            assert sse.errors[0]["error"]["message"]
            stored = await stored_reply(env.api, env.user, sid)
            assert stored is not None
            assert stored["finish_reason"] == "error"
            assert stored["content"] == sse.text
        assert sse.text == "Hello"  # the malformed chunk came right after the first
        assert stored is not None
        assert stored["content"] == "Hello"


async def test_midway_break_keeps_the_partial_text(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/break")
        async with _stream(env, sid) as r:
            sse = await read_sse(r, Sse())
        assert sse.text == "Hello there"
        stored = await stored_reply(env.api, env.user, sid)
        assert stored is not None
        assert (stored["content"], stored["finish_reason"]) == ("Hello there", "error")


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("up/e500", 502, "BACKEND_ERROR"),
        ("up/e404", 503, "MODEL_UNAVAILABLE"),
        ("up/e401", 503, "MODEL_UNAVAILABLE"),
        ("down/any", 503, "MODEL_UNAVAILABLE"),
        ("short/stall", 504, "BACKEND_TIMEOUT"),
    ],
)
async def test_upstream_failures_map_to_codes_non_streamed_and_streamed(
    tmp_path: Path, model: str, status: int, code: str
) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, model)
        r = await env.api.call(
            "POST", f"/v1/sessions/{sid}/messages", env.user, json={"content": "x"}
        )
        err = envelope_error(r, status, code)
        assert err["details"]["message_id"].startswith("msg_")
        data = await env.api.ok("GET", f"/v1/sessions/{sid}", env.user)
        assert [(m["role"], m.get("finish_reason")) for m in data["messages"]] == [
            ("user", None),
            ("assistant", "error"),
        ]
        async with _stream(env, sid) as s:
            assert s.status_code == 200
            sse = await read_sse(s, Sse())
        assert sse.finish_reason == "error"
        assert [e["error"]["code"] for e in sse.errors] == [code]


async def test_heartbeat_comments_before_the_first_token(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d", heartbeat_seconds=0.05) as env:
        sid = await _session(env, "up/slow")
        async with _stream(env, sid) as r:
            sse = await read_sse(r, Sse())
        assert sse.done
        assert sse.text == "Hello there, friend"
        assert sse.comments
        assert set(sse.comments) == {"keepalive"}
        # Default 15 s: a fast reply carries none.
        fast = await _session(env, "up/fast")
        async with _stream(env, fast) as r:
            assert (await read_sse(r, Sse())).comments == []


async def test_a_slow_upstream_delays_neither_another_session_nor_a_room_send(
    tmp_path: Path,
) -> None:
    async with session_env(tmp_path / "d") as env:
        slow = await _session(env, "up/stall")
        fast = await _session(env, "dev/echo")
        async with _stream(env, slow) as r:
            opened = await read_sse(r, Sse(), content_chunks=0)
            assert opened.chunks  # the role chunk: the stream is open, no token yet
            reply = await env.api.ok(
                "POST", f"/v1/sessions/{fast}/messages", env.user, json={"content": "quick"}
            )
            assert reply["content"] == "echo: quick"
            room = await env.api.room(env.user)
            sent = await env.api.send(env.user, room, "still here")
            assert sent["content"]["body"] == "still here"
            # ...all while the slow one has not produced a token.
            state = await env.api.ok("GET", f"/v1/sessions/{slow}", env.user)
            assert state["generating_message_id"] is not None
            assert [m["role"] for m in state["messages"]] == ["user"]
            await env.api.ok("POST", f"/v1/sessions/{slow}/stop", env.user)


async def test_delete_stops_a_reply_and_keeps_it_for_audit(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        sid = await _session(env, "up/hang")
        async with _stream(env, sid) as r:
            first = await read_sse(r, Sse(), content_chunks=2)
            envelope_ok(await env.api.call("DELETE", f"/v1/sessions/{sid}", env.user), 200)
            rest = await read_sse(r, first)
        assert rest.done
        assert rest.finish_reason == "cancelled"
        with trio.fail_after(5):
            await env.upstream.requests[0].gone.wait()


async def test_a_reply_interrupted_by_a_restart_is_closed_on_start(tmp_path: Path) -> None:
    data = tmp_path / "d"
    async with session_env(data) as env:
        sid = await _session(env, "up/hang")
        r = await env.api.client.send(
            env.api.client.build_request(
                "POST",
                f"/v1/sessions/{sid}/messages",
                headers=env.user.auth,
                json={"content": "hi", "stream": True},
            ),
            stream=True,
        )
        await read_sse(r, Sse(), content_chunks=1)
        upstream_models = env.running  # the server stops with the reply mid-generation
        user = env.user
    del upstream_models
    async with start_server(make_settings(data)) as running:
        from tests.support import api_for

        async with api_for(running) as api:
            got = await api.ok("GET", f"/v1/sessions/{sid}", user)
    await r.aclose()
    assert got["generating_message_id"] is None
    assert [(m["role"], m.get("finish_reason")) for m in got["messages"]] == [
        ("user", None),
        ("assistant", "error"),
    ]


async def test_history_is_cut_to_the_model_context_window(tmp_path: Path) -> None:
    async with session_env(tmp_path / "d") as env:
        data = await env.api.ok(
            "POST",
            "/v1/sessions",
            env.user,
            status=201,
            json={"model": "up/tiny", "system_prompt": "sys"},
        )
        sid = data["id"]
        for i in range(5):
            await env.api.ok(
                "POST", f"/v1/sessions/{sid}/messages", env.user, json={"content": f"{i}" * 200}
            )
        # Budget 400 - 100 = 300 tokens: system 5, each user message 54, each reply 7
        # (the upstream's reported completion_tokens). The fifth prompt would cost 303, so
        # the oldest user message goes, then its reply (a prompt starts on a user turn).
        sent = env.upstream.requests[-1].body["messages"]
        assert sent[0] == {"role": "system", "content": "sys"}
        assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * 3 + ["user"]
        assert sent[1]["content"] == "1" * 200
        assert sent[-1]["content"] == "4" * 200
        assert len(env.upstream.requests[-2].body["messages"]) == 1 + 7  # all fitted before
        r = await env.api.call(
            "POST", f"/v1/sessions/{sid}/messages", env.user, json={"content": "z" * 1200}
        )
        assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith("content")
        after = await env.api.ok("GET", f"/v1/sessions/{sid}", env.user)
        assert after["message_count"] == 10  # the refused message was not stored
