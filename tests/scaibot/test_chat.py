"""POST /chat: the SSE stream as a client reads it, its order, limits and refusals."""

from __future__ import annotations

from pathlib import Path

from bridges.models.base import ChatModels
from tests.scaibot.fakes import FixedRetriever, Recording
from tests.scaibot.support import (
    BASE,
    Env,
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
from tests.support import envelope_error


async def test_new_then_continued_conversation_with_history_window(tmp_path: Path) -> None:
    recorder: list[Recording] = []

    def wrap(models: ChatModels) -> ChatModels:
        recorder.append(Recording(models))
        return recorder[0]

    async with scaibot_env(tmp_path, wrap_models=wrap) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner, max_context_messages=2)
        visitor = bearer((await mint(env, owner, bot["id"]))["token"])
        first = await chat(env, visitor, {"bot_id": bot["id"], "message": "one"})
        cid = first.first("start")["conversation_id"]
        for text in ("two", "three"):
            s = await chat(
                env, visitor, {"bot_id": bot["id"], "conversation_id": cid, "message": text}
            )
            assert s.first("start")["conversation_id"] == cid
        prompt = recorder[0].prompts[-1]
        # system, then the last 2 stored messages (max_context_messages), then the message
        assert [(m.role, m.content) for m in prompt[1:]] == [
            ("user", "two"),
            ("assistant", "echo: two"),
            ("user", "three"),
        ]
        assert prompt[0].role == "system"
        assert prompt[0].content.startswith("You are Support.")
        t = await transcript(env, owner, cid)
        assert [m["content"] for m in t["messages"]] == [
            "one",
            "echo: one",
            "two",
            "echo: two",
            "three",
            "echo: three",
        ]
        answer = t["messages"][1]
        assert answer["finish_reason"] == "stop"
        assert answer["tokens"] == first.first("done")["total_tokens"]
        assert isinstance(answer["latency_ms"], int)
        assert answer["citations"] == []
        assert answer["retrieved_chunks"] == []
        assert recorder[0].max_tokens == [500, 500, 500]


async def test_max_tokens_per_response_cuts_the_answer(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner, max_tokens_per_response=3)
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "a b c d e f"})
    assert s.text == "echo: a b"
    t = await transcript(env, owner, s.first("start")["conversation_id"])
    assert t["messages"][1]["finish_reason"] == "length"
    assert t["channel"] == "operator"
    assert t["visitor_id"] == owner.participant_id


async def test_sse_headers_and_wire_framing(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    async with env.client.stream(
        "POST", f"{BASE}/chat", json={"bot_id": bot["id"], "message": "hi"}, headers=owner.auth
    ) as r:
        raw = (await r.aread()).decode()
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert raw.startswith('event: start\ndata: {"conversation_id":"cnv_')
    assert raw.endswith("\n\n")
    blocks = raw.strip("\n").split("\n\n")
    assert all(b.startswith("event: ") and "\ndata: {" in b for b in blocks)


async def test_include_system_prompt_for_tenant_admins_only(env: Env) -> None:
    admin = await user(env, "admin", admin=True)
    member = await user(env, "member")
    bot = await active_bot(env, admin)
    await env.api.ok("PUT", f"{BASE}/bots/{bot['id']}/tone", admin, json={"persona_name": "Ada"})
    params = {"include_system_prompt": "true"}
    s = await chat(env, admin, {"bot_id": bot["id"], "message": "hi"}, params=params)
    assert s.names()[:2] == ["start", "system_prompt"]
    assert s.first("system_prompt")["system_prompt"].startswith("You are Ada.")
    s = await chat(env, member, {"bot_id": bot["id"], "message": "hi"}, params=params)
    assert (s.status, s.body["error"]["code"]) == (403, "AUTHZ_PERMISSION_DENIED")
    visitor = bearer((await mint(env, admin, bot["id"]))["token"])
    s = await chat(env, visitor, {"bot_id": bot["id"], "message": "hi"}, params=params)
    assert (s.status, s.body["error"]["code"]) == (403, "AUTHZ_PERMISSION_DENIED")
    s = await chat(env, member, {"bot_id": bot["id"], "message": "hi"})
    assert "system_prompt" not in s.names()
    s = await chat(
        env,
        admin,
        {"bot_id": bot["id"], "message": "hi"},
        params={"include_system_prompt": "maybe"},
    )
    assert (s.status, s.body["error"]["code"]) == (422, "VALIDATION_ERROR")


async def test_operators_need_models_use(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    narrow = await env.api.ok(
        "POST", "/v1/api-keys", owner, status=201, json={"name": "k", "scopes": ["rooms:read"]}
    )
    s = await chat(env, bearer(narrow["key"]), {"bot_id": bot["id"], "message": "hi"})
    assert (s.status, s.body["error"]["code"]) == (403, "AUTH_INSUFFICIENT_SCOPE")
    scoped = await env.api.ok(
        "POST", "/v1/api-keys", owner, status=201, json={"name": "m", "scopes": ["models:use"]}
    )
    s = await chat(env, bearer(scoped["key"]), {"bot_id": bot["id"], "message": "hi"})
    assert s.names()[-1] == "done"


async def test_request_refusals_are_json_before_the_stream(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    for body, field in [
        ({"message": "hi"}, "bot_id"),
        ({"bot_id": bot["id"]}, "message"),
        ({"bot_id": bot["id"], "message": ""}, "message"),
        ({"bot_id": bot["id"], "message": "x" * 4001}, "message"),
        ({"bot_id": bot["id"], "message": "hi", "conversation_id": 5}, "conversation_id"),
    ]:
        s = await chat(env, owner, body)
        assert (s.status, s.body["error"]["code"]) == (422, "VALIDATION_ERROR")
        assert s.body["error"]["message"].startswith(field)
    s = await chat(env, owner, {"bot_id": "bot_nope", "message": "hi"})
    assert (s.status, s.body["error"]["code"]) == (404, "BOT_NOT_FOUND")
    s = await chat(
        env, owner, {"bot_id": bot["id"], "message": "hi", "conversation_id": "cnv_nope"}
    )
    assert (s.status, s.body["error"]["code"]) == (404, "CONVERSATION_NOT_FOUND")
    s = await chat(env, None, {"bot_id": bot["id"], "message": "hi"})
    assert (s.status, s.body["error"]["code"]) == (401, "AUTH_TOKEN_MISSING")


async def test_closed_conversations_take_no_more_messages(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    visitor = bearer((await mint(env, owner, bot["id"]))["token"])
    cid = (await chat(env, visitor, {"bot_id": bot["id"], "message": "hi"})).first("start")[
        "conversation_id"
    ]
    # An operator cannot post into a visitor's conversation through /chat.
    s = await chat(env, owner, {"bot_id": bot["id"], "conversation_id": cid, "message": "x"})
    assert (s.status, s.body["error"]["code"]) == (404, "CONVERSATION_NOT_FOUND")
    await env.api.ok(
        "PATCH", f"{BASE}/conversations/{cid}/status", owner, json={"status": "closed"}
    )
    s = await chat(env, visitor, {"bot_id": bot["id"], "conversation_id": cid, "message": "x"})
    assert (s.status, s.body["error"]["code"]) == (409, "CONVERSATION_CLOSED")


async def test_rate_limits_per_visitor_and_per_bot(tmp_path: Path) -> None:
    async with scaibot_env(
        tmp_path, visitor_messages_per_minute=2, bot_messages_per_minute=3
    ) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        alice = bearer((await mint(env, owner, bot["id"], visitor_id="alice"))["token"])
        bob = bearer((await mint(env, owner, bot["id"], visitor_id="bob"))["token"])
        body = {"bot_id": bot["id"], "message": "hi"}
        for _ in range(2):
            assert (await chat(env, alice, body)).names()[-1] == "done"
        s = await chat(env, alice, body)
        assert (s.status, s.body["error"]["code"]) == (429, "RATE_LIMITED")
        assert int(s.headers["retry-after"]) >= 1
        assert s.body["error"]["retry_after"] == int(s.headers["retry-after"])
        assert (await chat(env, bob, body)).names()[-1] == "done"  # the bot's 3rd
        s = await chat(env, bob, body)
        assert (s.status, s.body["error"]["code"]) == (429, "RATE_LIMITED")


async def test_retrieval_citations_in_the_stream_and_the_transcript(tmp_path: Path) -> None:
    retriever = FixedRetriever()
    async with scaibot_env(tmp_path, retriever=retriever) as env:
        owner = await user(env, "owner")
        plain = await active_bot(env, owner, slug="plain")
        bot = await active_bot(
            env,
            owner,
            knowledge_enabled=True,
            knowledge_settings={"top_k": 2, "score_threshold": 0.4},
        )
        s = await chat(env, owner, {"bot_id": plain["id"], "message": "refunds?"})
        assert "citation" not in s.names()
        assert retriever.calls == []  # knowledge off: no retrieval step
        s = await chat(env, owner, {"bot_id": bot["id"], "message": "refunds?"})
        collection, query, settings = retriever.calls[0]
        assert (collection, query, settings.top_k) == (bot["collection_id"], "refunds?", 2)
        assert s.text == "echo: refunds? [^1] [^2]"
        names = s.names()
        assert names.count("citation") == 2
        first_marker_token = next(
            i for i, (n, d) in enumerate(s.events) if n == "token" and "[^1]" in d["delta"]
        )
        assert names[first_marker_token + 1] == "citation"
        assert s.all("citation") == [
            {
                "marker": "1",
                "document_id": "doc_refunds",
                "snippet": "Refunds are processed within 14 business days.",
                "score": 0.84,
            },
            {
                "marker": "2",
                "document_id": "doc_shipping",
                "snippet": "Shipping is free over 50 euro.",
                "score": 0.51,
            },
        ]
        t = await transcript(env, owner, s.first("start")["conversation_id"])
        answer = t["messages"][1]
        assert answer["citations"] == s.all("citation")
        assert [c["chunk_id"] for c in answer["retrieved_chunks"]] == ["chk_1", "chk_2"]


async def test_linked_bots_retrieve_from_the_linked_collection(tmp_path: Path) -> None:
    retriever = FixedRetriever()
    async with scaibot_env(tmp_path, retriever=retriever) as env:
        owner = await user(env, "owner")
        source = await create_bot(env, owner, slug="source")
        linked = await active_bot(
            env,
            owner,
            knowledge_enabled=True,
            knowledge_mode="linked",
            knowledge_collection_id=source["collection_id"],
        )
        await chat(env, owner, {"bot_id": linked["id"], "message": "q"})
        assert retriever.calls[0][0] == source["collection_id"]


async def test_closing_the_stream_stops_the_model_and_stores_what_was_said(tmp_path: Path) -> None:
    recorder: list[Recording] = []

    def wrap(models: ChatModels) -> ChatModels:
        recorder.append(Recording(models))
        return recorder[0]

    async with scaibot_env(tmp_path, echo_delay_ms=20, wrap_models=wrap) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        visitor = bearer((await mint(env, owner, bot["id"]))["token"])
        words = " ".join(f"w{i}" for i in range(200))
        s = await chat_then_hang_up(
            env, visitor.access_token, {"bot_id": bot["id"], "message": words}, 3
        )
        cid = s.first("start")["conversation_id"]

        async def stored() -> dict[str, object] | None:
            t = await transcript(env, owner, cid)
            return t["messages"][1] if len(t["messages"]) == 2 else None

        answer = await eventually(stored)
        assert answer["finish_reason"] == "cancelled"
        assert str(answer["content"]).startswith(s.text)
        assert len(str(answer["content"]).split()) < 50
        assert recorder[0].closed == 1
        assert recorder[0].yielded < 50


async def test_a_model_failure_midway_ends_with_an_error_event(tmp_path: Path) -> None:
    def wrap(models: ChatModels) -> ChatModels:
        return Recording(models, fail_after=2)

    async with scaibot_env(tmp_path, wrap_models=wrap) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        s = await chat(env, owner, {"bot_id": bot["id"], "message": "one two three four"})
        assert s.names() == ["start", "token", "token", "error"]
        error = s.first("error")
        assert error["code"] == "BACKEND_ERROR"
        assert error["message"]
        t = await transcript(env, owner, s.first("start")["conversation_id"])
        assert t["messages"][1]["finish_reason"] == "error"
        assert t["messages"][1]["content"] == s.text


async def test_errors_render_in_the_bot_vocabulary(env: Env) -> None:
    owner = await user(env, "owner")
    r = await env.api.call("POST", f"{BASE}/chat", owner, content=b"[1]")
    envelope_error(r, 422, "VALIDATION_ERROR")
