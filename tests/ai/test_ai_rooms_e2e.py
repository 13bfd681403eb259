"""AI participants answering in rooms, end to end over websockets (CONTRACT 12)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import trio

from conf.sections import AiSettings
from tests.ai.ai_support import (
    Env,
    ai_message,
    ai_server,
    is_ai_frame,
    login,
    open_ws,
    recv,
    status_is,
    until,
)
from tests.support import User, envelope_error


def statuses(frames: list[dict[str, Any]], draft_id: str) -> list[str]:
    return [
        f["status"] for f in frames if f["type"] == "swp.ai.status" and f["draft_id"] == draft_id
    ]


def chunk_text(frames: list[dict[str, Any]], draft_id: str) -> str:
    chunks = [
        f for f in frames if f["type"] == "swp.room.message.chunk" and f["draft_id"] == draft_id
    ]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    return "".join(c["delta"] for c in chunks)


async def group(env: Env, *members: User, ai: str) -> str:
    body = {
        "name": "team",
        "initial_members": [{"type": "user", "id": m.participant_id} for m in members]
        + [{"type": "bot", "id": ai}],
    }
    data = await env.api.ok("POST", "/v1/rooms", env.admin, status=201, json=body)
    return str(data["id"])


async def test_a_mention_streams_then_stores_one_answer_seen_by_everyone(env: Env) -> None:
    bob = await env.api.register("bob")
    ai = await env.ai("helper")
    room = await group(env, bob, ai=ai)
    start = (await env.api.ok("GET", "/v1/sync?timeout=0", env.admin))["next_cursor"]
    async with (
        open_ws(env.running, env.admin) as mine,
        open_ws(env.running, await login(env.api, "admin")) as mine_too,
        open_ws(env.running, bob) as bobs,
    ):
        sent = await env.api.ok(
            "POST",
            f"/v1/rooms/{room}/messages",
            env.admin,
            status=201,
            json={"content": "what is up", "mention": [{"type": "bot", "id": ai}]},
        )
        for ws in (mine, mine_too, bobs):
            frames = await until(ws, status_is("done"))
            answer = ai_message(frames, ai)
            assert len(answer) == 1, frames
            event = answer[0]
            content = event["content"]
            draft = content["ai"]["draft_id"]
            assert content["msgtype"] == "swp.text"
            assert content["body"] == "echo: admin: what is up"
            assert content["reply_to_event_id"] == sent["id"]
            assert content["ai"]["model"] == "dev/echo"
            assert content["ai"]["finish_reason"] == "stop"
            assert set(content["ai"]["usage"]) >= {"prompt_tokens", "completion_tokens"}
            assert statuses(frames, draft) == ["thinking", "streaming", "done"]
            assert chunk_text(frames, draft) == content["body"]
            kinds = [f["type"] for f in frames if is_ai_frame(f) or f is event]
            # status, chunks, then the event, then done
            assert kinds[0] == "swp.ai.status"
            assert kinds.index("swp.room.message") == len(kinds) - 2
            first_chunk = kinds.index("swp.room.message.chunk")
            assert first_chunk < kinds.index("swp.room.message")
    # Catch-up carries the final event once and no chunk.
    sync = await env.api.ok("GET", f"/v1/sync?since={start}&timeout=0", bob)
    types = [(e["type"], e["sender_id"]) for e in sync["events"]]
    assert types.count(("swp.room.message", ai)) == 1
    assert all(e["type"] != "swp.room.message.chunk" for e in sync["events"])
    async with open_ws(env.running, bob, since=int(start)) as replay:
        frames = await until(replay, lambda f: f.get("sender_id") == ai)
        assert not any(is_ai_frame(f) for f in frames)
    # The AI is online for everyone.
    presence = await env.api.ok("GET", f"/v1/presence?ids={ai}", bob)
    assert presence[ai] == "online"


async def test_no_mention_in_a_group_gets_no_answer(env: Env) -> None:
    ai = await env.ai("helper")
    room = await group(env, ai=ai)
    async with open_ws(env.running, env.admin) as ws:
        quiet = await env.api.send(env.admin, room, "nobody asked the AI")
        asked = await env.api.send(
            env.admin,
            room,
            "now I ask",
            content={"msgtype": "swp.text", "body": "now I ask", "mentions": [ai]},
        )
        frames = await until(ws, status_is("done"))
    answers = ai_message(frames, ai)
    assert [a["content"]["reply_to_event_id"] for a in answers] == [asked["id"]]
    assert quiet["id"] != asked["id"]
    snap = await env.api.ok("GET", f"/v1/rooms/{room}/state", env.admin)
    assert snap["engagement"]["mode"] == "mention"


async def test_a_dm_with_an_ai_answers_everything(env: Env) -> None:
    ai = await env.ai("helper")
    dm = await env.api.ok(
        "POST", "/v1/rooms/dm", env.admin, status=201, json={"participant_id": ai}
    )
    room = dm["id"]
    snap = await env.api.ok("GET", f"/v1/rooms/{room}/state", env.admin)
    assert snap["engagement"]["mode"] == "always"
    async with open_ws(env.running, env.admin) as ws:
        sent = await env.api.send(env.admin, room, "hello there")
        frames = await until(ws, status_is("done"))
    (answer,) = ai_message(frames, ai)
    assert answer["content"]["reply_to_event_id"] == sent["id"]
    assert answer["content"]["body"] == "echo: admin: hello there"


async def mention(env: Env, room: str, ai: str, body: str = "go") -> Any:
    return await env.api.ok(
        "POST",
        f"/v1/rooms/{room}/send",
        env.admin,
        json={"content": {"msgtype": "swp.text", "body": body, "mentions": [ai]}},
    )


async def started(ws: Any) -> tuple[list[dict[str, Any]], str]:
    """Frames until the gated model's two words have streamed; and the draft id."""
    frames: list[dict[str, Any]] = []
    text = ""
    while text != "part one":
        frame = await recv(ws)
        frames.append(frame)
        if frame["type"] == "swp.room.message.chunk":
            text += frame["delta"]
    return frames, frames[-1]["draft_id"]


async def test_a_new_human_message_cancels_and_stores_the_partial_text(env: Env) -> None:
    ai = await env.ai("slow", model="test/gated")
    room = await group(env, ai=ai)
    async with open_ws(env.running, env.admin) as ws:
        trigger = await mention(env, room, ai)
        frames, draft = await started(ws)
        await env.api.send(env.admin, room, "never mind")
        frames += await until(ws, status_is("cancelled", draft))
    (answer,) = ai_message(frames, ai)
    assert answer["content"]["body"] == "part one"
    assert answer["content"]["ai"]["finish_reason"] == "cancelled"
    assert answer["content"]["ai"]["usage"]["completion_tokens"] > 0  # estimated
    assert answer["content"]["reply_to_event_id"] == trigger["id"]
    assert statuses(frames, draft) == ["thinking", "streaming", "cancelled"]
    assert env.backend.closed == 1  # the upstream stream was closed


async def test_stop_and_redaction_stop_the_generation(env: Env) -> None:
    ai = await env.ai("slow", model="test/gated")
    room = await group(env, ai=ai)
    async with open_ws(env.running, env.admin) as ws:
        await mention(env, room, ai)
        frames, draft = await started(ws)
        stopped = await env.api.ok(
            "POST", f"/v1/rooms/{room}/ai/stop", env.admin, json={"participant_id": ai}
        )
        assert stopped["stopped"] == [draft]
        frames += await until(ws, status_is("cancelled", draft))
        assert ai_message(frames, ai)[0]["content"]["ai"]["finish_reason"] == "cancelled"
        # Stopping with nothing running stops nothing (an empty body is fine).
        idle = await env.api.ok("POST", f"/v1/rooms/{room}/ai/stop", env.admin)
        assert idle["stopped"] == []

        trigger = await mention(env, room, ai, "again")
        frames, draft = await started(ws)
        await env.api.ok("POST", f"/v1/rooms/{room}/events/{trigger['id']}/redact", env.admin)
        frames += await until(ws, status_is("cancelled", draft))
        assert [a["content"]["ai"]["draft_id"] for a in ai_message(frames, ai)] == [draft]


async def test_engage_joins_answers_the_latest_message_and_is_busy_meanwhile(env: Env) -> None:
    ai = await env.ai("slow", model="test/gated")
    room = await env.api.room(env.admin, name="no ai yet")
    latest = await env.api.send(env.admin, room, "anyone?")
    async with open_ws(env.running, env.admin) as ws:
        data = await env.api.ok(
            "POST",
            f"/v1/rooms/{room}/ai/engage",
            env.admin,
            status=202,
            json={"participant_id": ai},
        )
        assert data["reply_to_event_id"] == latest["id"]
        frames, draft = await started(ws)
        assert draft == data["draft_id"]
        joins = [
            f
            for f in frames
            if f["type"] == "swp.room.member" and f["content"]["participant_id"] == ai
        ]
        assert joins
        assert joins[0]["content"]["membership"] == "join"
        r = await env.api.call(
            "POST", f"/v1/rooms/{room}/ai/engage", env.admin, json={"participant_id": ai}
        )
        envelope_error(r, 409, "SW_AI_BUSY")
        env.backend.gate.set()
        frames += await until(ws, status_is("done", draft))
    (answer,) = ai_message(frames, ai)
    assert answer["content"]["body"] == "part one end"
    assert answer["content"]["reply_to_event_id"] == latest["id"]
    assert answer["content"]["ai"]["finish_reason"] == "stop"
    prompt = env.backend.prompts[0]
    assert [m.role for m in prompt] == ["user"]
    assert prompt[0].content == "admin: anyone?"


async def test_two_ais_always_answer_one_message_once_each_and_never_each_other(
    env: Env,
) -> None:
    one, two = await env.ai("one"), await env.ai("two")
    body = {
        "name": "duo",
        "initial_members": [{"type": "bot", "id": one}, {"type": "bot", "id": two}],
    }
    room = (await env.api.ok("POST", "/v1/rooms", env.admin, status=201, json=body))["id"]
    await env.api.ok("PUT", f"/v1/rooms/{room}/ai/engagement", env.admin, json={"mode": "always"})
    async with open_ws(env.running, env.admin) as ws:
        sent = await env.api.send(env.admin, room, "hello both")
        frames = await until(ws, status_is("done"))
        frames += await until(ws, status_is("done"))
        # Back to mention-only, then one more message naming one AI: the runner
        # handles events in order, so any draft the two answers had triggered
        # would have shown its status before this last answer is done.
        await env.api.ok(
            "PUT", f"/v1/rooms/{room}/ai/engagement", env.admin, json={"mode": "mention"}
        )
        last = await mention(env, room, one, "only one")
        frames += await until(ws, lambda f: f.get("sender_id") == one and len(ai_message([f], one)))
        frames += await until(ws, status_is("done"))
    answers = ai_message(frames, one) + ai_message(frames, two)
    replies = sorted((a["sender_id"], a["content"]["reply_to_event_id"]) for a in answers)
    assert replies == sorted([(one, sent["id"]), (two, sent["id"]), (one, last["id"])])
    drafts = {f["draft_id"] for f in frames if f["type"] == "swp.ai.status"}
    assert len(drafts) == 3
    history = await env.api.ok("GET", f"/v1/rooms/{room}/messages?limit=50", env.admin)
    from_ais = [e for e in history["items"] if e["sender_id"] in (one, two)]
    assert len(from_ais) == 3


async def test_the_upstream_failing_midway_reports_error_and_keeps_the_partial(env: Env) -> None:
    ai = await env.ai("flaky", model="test/fail")
    room = await group(env, ai=ai)
    async with open_ws(env.running, env.admin) as ws:
        await mention(env, room, ai)
        frames = await until(ws, status_is("error"))
    error = frames[-1]
    assert error["error"]["code"] == "BACKEND_ERROR"
    assert error["error"]["message"]
    (answer,) = ai_message(frames, ai)
    assert answer["content"]["body"] == "part one"
    assert answer["content"]["ai"]["finish_reason"] == "error"
    assert chunk_text(frames, error["draft_id"]) == "part one"


async def test_each_ai_has_its_own_rate_limit_per_room(tmp_path: Path) -> None:
    async with ai_server(tmp_path / "data", ai=_ai_settings(rate_limit=1)) as env:
        ai = await env.ai("helper")
        room = await group(env, ai=ai)
        async with open_ws(env.running, env.admin) as ws:
            await mention(env, room, ai, "first")
            await until(ws, status_is("done"))
            await mention(env, room, ai, "second")
            frames = await until(ws, status_is("error"))
        assert frames[-1]["error"]["code"] == "SW_RATE_LIMIT_EXCEEDED"
        assert not ai_message(frames, ai)


def _ai_settings(**changes: Any) -> AiSettings:
    return dataclasses.replace(AiSettings(), **changes)


async def test_a_restart_mid_generation_leaves_nothing_half_done(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with ai_server(data) as env:
        ai = await env.ai("slow", model="test/gated")
        room = await group(env, ai=ai)
        async with open_ws(env.running, env.admin) as ws:
            await mention(env, room, ai, "before the restart")
            await started(ws)
    with trio.fail_after(10):
        async with ai_server(data) as env:
            admin = env.admin
            history = await env.api.ok("GET", f"/v1/rooms/{room}/messages", admin)
            assert [e for e in history["items"] if e["sender_id"] == ai] == []
            env.backend.gate.set()
            async with open_ws(env.running, admin) as ws:
                data_ = await env.api.ok(
                    "POST",
                    f"/v1/rooms/{room}/ai/engage",
                    admin,
                    status=202,
                    json={"participant_id": ai},
                )
                frames = await until(ws, status_is("done", data_["draft_id"]))
            assert len(ai_message(frames, ai)) == 1
