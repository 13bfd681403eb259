"""The happy path end to end: a bot, an embed token, one streamed chat."""

from __future__ import annotations

from tests.scaibot.support import Env, active_bot, bearer, chat, mint, transcript


async def test_widget_chat_streams_named_events_in_order(env: Env) -> None:
    owner = await env.api.register("owner")
    bot = await active_bot(env, owner)
    token = await mint(env, owner, bot["id"], visitor_id="usr_42")
    s = await chat(env, bearer(token["token"]), {"bot_id": bot["id"], "message": "hello there"})
    assert s.status == 200
    assert s.names()[0] == "start"
    assert s.names()[-1] == "done"
    assert set(s.names()[1:-1]) == {"token"}
    assert s.text == "echo: hello there"
    start = s.first("start")
    assert start["conversation_id"].startswith("cnv_")
    done = s.first("done")
    assert done["total_tokens"] > 0
    assert isinstance(done["latency_ms"], int)
    t = await transcript(env, owner, start["conversation_id"])
    assert [m["role"] for m in t["messages"]] == ["user", "assistant"]
    assert t["messages"][1]["content"] == "echo: hello there"
    assert t["messages"][1]["id"] == start["message_id"]
    assert t["visitor_id"] == "usr_42"
