"""Escalation rules: CRUD and reorder, each trigger type through the SSE stream, and
each action type against a real local receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.scaibot.receivers import http_receiver, smtp_receiver
from tests.scaibot.support import (
    BASE,
    Env,
    active_bot,
    bearer,
    chat,
    eventually,
    mint,
    scaibot_env,
    transcript,
    user,
)
from tests.support import User, envelope_error, envelope_ok

QUEUE = {"action_type": "scaiqueue"}


def rules_path(bot: dict[str, Any]) -> str:
    return f"{BASE}/bots/{bot['id']}/escalations"


async def add_rule(env: Env, owner: User, bot: dict[str, Any], **body: Any) -> dict[str, Any]:
    body.setdefault("name", "rule")
    for key, value in QUEUE.items():
        body.setdefault(key, value)
    data: dict[str, Any] = await env.api.ok("POST", rules_path(bot), owner, status=201, json=body)
    return data


async def escalation_of(env: Env, owner: User, cid: str) -> dict[str, Any]:
    t = await transcript(env, owner, cid)
    assert t["status"] == "escalated"
    assert len(t["escalations"]) == 1
    e: dict[str, Any] = t["escalations"][0]
    return e


async def settled(env: Env, owner: User, cid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        e = await escalation_of(env, owner, cid)
        return e if e["status"] in ("delivered", "failed") else None

    result: dict[str, Any] = await eventually(check)
    return result


# ------------------------------------------------------------------ CRUD


async def test_rules_crud_priority_order_and_reorder(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    r = await env.api.call(
        "POST", rules_path(bot), owner, json={"name": "a", "trigger_type": "explicit", **QUEUE}
    )
    a = envelope_ok(r, 201)
    assert a["id"].startswith("esc_")
    assert (a["priority"], a["trigger_config"], a["action_config"]) == (
        50,
        {},
        {"queue": "default"},
    )
    assert a["message"]
    b = await add_rule(
        env,
        owner,
        bot,
        name="b",
        trigger_type="keyword",
        priority=90,
        trigger_config={"keywords": ["refund"]},
        message="A person will help.",
    )
    assert b["trigger_config"] == {"keywords": ["refund"], "match_mode": "substring"}
    c = await add_rule(env, owner, bot, name="c", trigger_type="explicit")
    listed = await env.api.ok("GET", rules_path(bot), owner)
    assert [x["id"] for x in listed["items"]] == [b["id"], a["id"], c["id"]]
    # PUT replaces the rule
    put = {"name": "a2", "trigger_type": "sentiment", "priority": 95, **QUEUE}
    a2 = await env.api.ok("PUT", f"{rules_path(bot)}/{a['id']}", owner, json=put)
    assert (a2["name"], a2["priority"], a2["trigger_config"]) == (
        "a2",
        95,
        {"threshold": -0.6, "window_messages": 3},
    )
    r = await env.api.call("PUT", f"{rules_path(bot)}/esc_nope", owner, json=put)
    envelope_error(r, 404, "ESCALATION_NOT_FOUND")
    # reorder: listed first = highest priority
    data = await env.api.ok(
        "POST", f"{rules_path(bot)}/reorder", owner, json={"order": [c["id"], b["id"], a["id"]]}
    )
    assert [x["id"] for x in data["items"]] == [c["id"], b["id"], a["id"]]
    assert (
        data["items"][0]["priority"] > data["items"][1]["priority"] > data["items"][2]["priority"]
    )
    partial = await env.api.ok(
        "POST", f"{rules_path(bot)}/reorder", owner, json={"order": [a["id"]]}
    )
    assert [x["id"] for x in partial["items"]] == [a["id"], c["id"], b["id"]]
    for body, status, code in [
        ({"order": ["esc_nope"]}, 404, "ESCALATION_NOT_FOUND"),
        ({"order": [a["id"], a["id"]]}, 422, "VALIDATION_ERROR"),
        ({}, 422, "VALIDATION_ERROR"),
    ]:
        r = await env.api.call("POST", f"{rules_path(bot)}/reorder", owner, json=body)
        envelope_error(r, status, code)
    # DELETE: 204, then gone
    r = await env.api.call("DELETE", f"{rules_path(bot)}/{b['id']}", owner)
    assert (r.status_code, r.content) == (204, b"")
    r = await env.api.call("DELETE", f"{rules_path(bot)}/{b['id']}", owner)
    envelope_error(r, 404, "ESCALATION_NOT_FOUND")
    member = await user(env, "member")
    assert len((await env.api.ok("GET", rules_path(bot), member))["items"]) == 2
    r = await env.api.call(
        "POST", rules_path(bot), member, json={"name": "x", "trigger_type": "explicit", **QUEUE}
    )
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (
            {
                "trigger_type": "keyword",
                "trigger_config": {"keywords": ["(x"], "match_mode": "regex"},
            },
            422,
            "ESCALATION_TRIGGER_INVALID",
            "trigger_config.keywords[0]",
        ),
        ({"trigger_type": "mood"}, 422, "ESCALATION_TRIGGER_INVALID", "trigger_type"),
        (
            {"trigger_type": "sentiment", "trigger_config": {"threshold": "low"}},
            422,
            "ESCALATION_TRIGGER_INVALID",
            "trigger_config.threshold",
        ),
        (
            {"trigger_type": "explicit", "action_type": "fax"},
            422,
            "VALIDATION_ERROR",
            "action_type",
        ),
        (
            {"trigger_type": "explicit", "action_type": "webhook", "action_config": {"url": "x"}},
            422,
            "VALIDATION_ERROR",
            "action_config.url",
        ),
        ({"trigger_type": "explicit", "priority": "high"}, 422, "VALIDATION_ERROR", "priority"),
    ],
)
async def test_rule_refusals(
    env: Env, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    r = await env.api.call("POST", rules_path(bot), owner, json={"name": "r", **QUEUE, **body})
    assert envelope_error(r, status, code)["message"].startswith(field)


async def test_webhook_secret_is_never_shown(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    rule = await add_rule(
        env,
        owner,
        bot,
        trigger_type="explicit",
        action_type="webhook",
        action_config={"url": "http://127.0.0.1:9/h", "secret": "top-secret-value"},
    )
    assert rule["action_config"] == {"url": "http://127.0.0.1:9/h", "secret_set": True}
    r = await env.api.call("GET", rules_path(bot), owner)
    assert "top-secret-value" not in r.text


# ------------------------------------------------------------------ triggers


async def test_keyword_rule_answers_before_the_model(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    rule = await add_rule(
        env,
        owner,
        bot,
        trigger_type="keyword",
        message="Connecting you now.",
        trigger_config={"keywords": [r"\bcancel(l?ation)?\b"], "match_mode": "regex"},
    )
    visitor = bearer((await mint(env, owner, bot["id"]))["token"])
    s = await chat(env, visitor, {"bot_id": bot["id"], "message": "I want a CANCELLATION"})
    assert s.names() == ["start", "escalation", "done"]
    assert s.first("escalation") == {
        "rule_id": rule["id"],
        "action_type": "scaiqueue",
        "message": "Connecting you now.",
    }
    assert s.first("done")["total_tokens"] == 0
    cid = s.first("start")["conversation_id"]
    t = await transcript(env, owner, cid)
    assert t["messages"][1]["content"] == "Connecting you now."
    e = await escalation_of(env, owner, cid)
    assert (e["rule_id"], e["trigger_type"], e["stage"], e["status"]) == (
        rule["id"],
        "keyword",
        "pre",
        "open",
    )
    assert e["message_id"] == s.first("start")["message_id"]
    # A message without the keyword is answered by the model.
    s = await chat(env, visitor, {"bot_id": bot["id"], "message": "keep my plan"})
    assert "escalation" not in s.names()


async def test_explicit_rule(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(env, owner, bot, trigger_type="explicit")
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "Can I speak to a real person?"})
    assert s.names() == ["start", "escalation", "done"]
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "What are your hours?"})
    assert "escalation" not in s.names()


async def test_first_rule_by_priority_wins(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(env, owner, bot, name="low", trigger_type="explicit", priority=1, message="low")
    await add_rule(
        env,
        owner,
        bot,
        name="high",
        trigger_type="keyword",
        priority=99,
        message="high",
        trigger_config={"keywords": ["human"]},
    )
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "talk to a human"})
    assert s.first("escalation")["message"] == "high"


async def test_intent_rule_fires_after_the_answer(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(
        env,
        owner,
        bot,
        trigger_type="intent",
        trigger_config={"intents": ["refund_request"], "threshold": 0.5},
    )
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "I want a refund"})
    names = s.names()
    assert names[0] == "start"
    assert names[-2:] == ["escalation", "done"]
    assert set(names[1:-2]) == {"token"}
    assert s.text == "echo: I want a refund"
    e = await escalation_of(env, owner, s.first("start")["conversation_id"])
    assert (e["trigger_type"], e["stage"]) == ("intent", "post")
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "opening hours?"})
    assert "escalation" not in s.names()


async def test_sentiment_rule_uses_the_visitors_recent_messages(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(
        env,
        owner,
        bot,
        trigger_type="sentiment",
        trigger_config={"threshold": -0.5, "window_messages": 2},
    )
    visitor = bearer((await mint(env, owner, bot["id"]))["token"])
    s = await chat(
        env, visitor, {"bot_id": bot["id"], "message": "Thanks, that is great and helpful!"}
    )
    assert "escalation" not in s.names()
    cid = s.first("start")["conversation_id"]
    body = {"bot_id": bot["id"], "conversation_id": cid}
    # mean of (great, terrible) is above -0.5: no escalation yet
    s = await chat(env, visitor, {**body, "message": "This is terrible."})
    assert "escalation" not in s.names()
    s = await chat(
        env, visitor, {**body, "message": "Awful, useless, I hate this horrible service!"}
    )
    assert s.names()[-2:] == ["escalation", "done"]


async def test_confidence_rule_without_knowledge_found(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner, knowledge_enabled=True)
    await add_rule(env, owner, bot, trigger_type="confidence")
    # The default retriever finds nothing above score_threshold.
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "refund terms?"})
    assert s.names()[-2:] == ["escalation", "done"]
    e = await escalation_of(env, owner, s.first("start")["conversation_id"])
    assert e["trigger_type"] == "confidence"


async def test_confidence_rule_when_the_model_says_it_does_not_know(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(env, owner, bot, trigger_type="confidence", trigger_config={"threshold": 0.5})
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "hello"})
    assert "escalation" not in s.names()
    # dev/echo repeats the message, so its answer says it does not know.
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "I don't know what to do"})
    assert s.names()[-2:] == ["escalation", "done"]


# ------------------------------------------------------------------ actions


async def test_webhook_action_is_signed(tmp_path: Path) -> None:
    with http_receiver(secret="hook-secret-1") as hook:
        async with scaibot_env(tmp_path) as env:
            owner = await user(env, "owner")
            bot = await active_bot(env, owner)
            rule = await add_rule(
                env,
                owner,
                bot,
                trigger_type="explicit",
                action_type="webhook",
                action_config={"url": hook.url, "secret": "hook-secret-1"},
            )
            token = await mint(env, owner, bot["id"], visitor_id="v1", visitor_email="v@x.org")
            s = await chat(
                env, bearer(token["token"]), {"bot_id": bot["id"], "message": "talk to a human"}
            )
            cid = s.first("start")["conversation_id"]
            e = await settled(env, owner, cid)
            assert (e["status"], e["attempts"], e["error"]) == ("delivered", 1, None)
    [got] = hook.requests
    assert got.signature_ok is True
    assert got.headers["Content-Type"] == "application/json"
    assert got.body["event"] == "scaibot.escalation"
    assert (got.body["conversation_id"], got.body["rule_id"]) == (cid, rule["id"])
    assert (got.body["visitor_id"], got.body["visitor_email"]) == ("v1", "v@x.org")
    assert got.body["user_message"] == "talk to a human"


async def test_a_failing_receiver_is_retried_recorded_and_never_breaks_the_chat(
    tmp_path: Path,
) -> None:
    with http_receiver(status=500, secret="hook-secret-1") as hook:
        async with scaibot_env(tmp_path, action_attempts=2) as env:
            owner = await user(env, "owner")
            bot = await active_bot(env, owner)
            await add_rule(
                env,
                owner,
                bot,
                trigger_type="intent",
                action_type="webhook",
                trigger_config={"intents": ["refund"]},
                action_config={"url": hook.url, "secret": "hook-secret-1"},
            )
            s = await chat(env, owner, {"bot_id": bot["id"], "message": "refund please"})
            assert s.names()[-2:] == ["escalation", "done"]
            assert s.text == "echo: refund please"
            e = await settled(env, owner, s.first("start")["conversation_id"])
            assert (e["status"], e["attempts"]) == ("failed", 2)
            assert e["error"]["code"] == "ESCALATION_ACTION_FAILED"
            assert "500" in e["error"]["message"]
            # The bot keeps answering.
            s = await chat(env, owner, {"bot_id": bot["id"], "message": "hello"})
            assert s.names()[-1] == "done"
    assert len(hook.requests) == 2
    assert all(r.signature_ok for r in hook.requests)


async def test_an_unreachable_receiver_is_recorded(tmp_path: Path) -> None:
    async with scaibot_env(tmp_path, action_attempts=1, webhook_timeout_s=2.0) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        await add_rule(
            env,
            owner,
            bot,
            trigger_type="explicit",
            action_type="slack",
            action_config={"webhook_url": "http://127.0.0.1:1/nothing"},
        )
        s = await chat(
            env, owner, {"bot_id": bot["id"], "message": "a human please, talk to a person"}
        )
        e = await settled(env, owner, s.first("start")["conversation_id"])
        assert (e["status"], e["error"]["code"]) == ("failed", "ESCALATION_ACTION_FAILED")


async def test_slack_action(tmp_path: Path) -> None:
    with http_receiver() as slack:
        async with scaibot_env(tmp_path) as env:
            owner = await user(env, "owner")
            bot = await active_bot(env, owner)
            await add_rule(
                env,
                owner,
                bot,
                name="VIP",
                trigger_type="explicit",
                action_type="slack",
                action_config={"webhook_url": slack.url},
            )
            s = await chat(env, owner, {"bot_id": bot["id"], "message": "let me talk to someone"})
            e = await settled(env, owner, s.first("start")["conversation_id"])
            assert e["status"] == "delivered"
    [got] = slack.requests
    assert got.body == {"text": "ScaiBot escalation (VIP): let me talk to someone"}


async def test_email_action(tmp_path: Path) -> None:
    with smtp_receiver() as mailbox:
        async with scaibot_env(
            tmp_path, smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_from="bot@example.org"
        ) as env:
            owner = await user(env, "owner")
            bot = await active_bot(env, owner)
            await add_rule(
                env,
                owner,
                bot,
                trigger_type="explicit",
                action_type="email",
                action_config={"to": ["ops@example.org"], "subject": "Visitor needs help"},
            )
            token = await mint(env, owner, bot["id"], visitor_name="Vee")
            s = await chat(
                env, bearer(token["token"]), {"bot_id": bot["id"], "message": "I need a human"}
            )
            e = await settled(env, owner, s.first("start")["conversation_id"])
            assert e["status"] == "delivered"
    [mail] = mailbox.messages
    assert mail.mail_from == "bot@example.org"
    assert mail.rcpt_tos == ["ops@example.org"]
    text = mail.content.decode()
    assert "Subject: Visitor needs help" in text
    assert "I need a human" in text
    assert "Vee" in text


async def test_email_without_smtp_is_recorded_as_failed(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    await add_rule(
        env,
        owner,
        bot,
        trigger_type="explicit",
        action_type="email",
        action_config={"to": "ops@example.org"},
    )
    s = await chat(env, owner, {"bot_id": bot["id"], "message": "real person please"})
    e = await settled(env, owner, s.first("start")["conversation_id"])
    assert e["status"] == "failed"
    assert "smtp_host" in e["error"]["message"]


async def test_scaiqueue_handoff_and_operator_reply(env: Env) -> None:
    owner = await user(env, "owner")
    operator = await user(env, "operator")
    bot = await active_bot(env, owner)
    await add_rule(env, owner, bot, trigger_type="explicit", message="An operator will join.")
    visitor = bearer((await mint(env, owner, bot["id"], visitor_name="Vee"))["token"])
    s = await chat(env, visitor, {"bot_id": bot["id"], "message": "talk to a person"})
    cid = s.first("start")["conversation_id"]
    queue = await env.api.ok("GET", f"{BASE}/handoffs", operator)
    [item] = queue["items"]
    assert (item["conversation_id"], item["status"], item["visitor_name"]) == (cid, "open", "Vee")
    assert item["conversation_status"] == "escalated"
    r = await env.api.call(
        "POST", f"{BASE}/conversations/{cid}/messages", operator, json={"content": "Hi, I am Sam."}
    )
    reply = envelope_ok(r, 201)
    assert (reply["role"], reply["content"], reply["operator_id"]) == (
        "operator",
        "Hi, I am Sam.",
        operator.participant_id,
    )
    answered = await env.api.ok("GET", f"{BASE}/handoffs", operator, params={"status": "answered"})
    assert [i["answered_by"] for i in answered["items"]] == [operator.participant_id]
    assert (await env.api.ok("GET", f"{BASE}/handoffs", operator, params={"status": "open"}))[
        "items"
    ] == []
    seen = await env.api.ok("GET", f"{BASE}/conversations/{cid}", visitor)
    assert [m["role"] for m in seen["messages"]] == ["user", "assistant", "operator"]
    assert seen["status"] == "escalated"
    for body, code in [({}, "VALIDATION_ERROR"), ({"content": ""}, "VALIDATION_ERROR")]:
        r = await env.api.call("POST", f"{BASE}/conversations/{cid}/messages", operator, json=body)
        envelope_error(r, 422, code)
    r = await env.api.call(
        "POST", f"{BASE}/conversations/cnv_nope/messages", operator, json={"content": "x"}
    )
    envelope_error(r, 404, "CONVERSATION_NOT_FOUND")
    r = await env.api.call("GET", f"{BASE}/handoffs", operator, params={"status": "lost"})
    envelope_error(r, 422, "VALIDATION_ERROR")
    await trio.lowlevel.checkpoint()
