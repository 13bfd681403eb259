"""Conversations (list filters and paging, transcript, status) and tone (GET/PUT/preview)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homeserver.modules.scaibot.ports import BotRef
from tests.scaibot.support import (
    BASE,
    Env,
    active_bot,
    bearer,
    chat,
    mint,
    other_tenant_user,
    scaibot_env,
    user,
)
from tests.support import ISO_MS, envelope_error


async def start(env: Env, who: Any, bot: dict[str, Any], text: str = "hi") -> str:
    s = await chat(env, who, {"bot_id": bot["id"], "message": text})
    cid: str = s.first("start")["conversation_id"]
    return cid


async def test_list_filters_and_pages(env: Env) -> None:
    owner = await user(env, "owner")
    a = await active_bot(env, owner, slug="bot-a")
    b = await active_bot(env, owner, slug="bot-b")
    alice = bearer((await mint(env, owner, a["id"], visitor_id="alice"))["token"])
    bob = bearer((await mint(env, owner, a["id"], visitor_id="bob"))["token"])
    c1 = await start(env, alice, a)
    c2 = await start(env, bob, a)
    c3 = await start(env, owner, b)
    since = (await env.api.ok("GET", f"{BASE}/conversations/{c2}", owner))["started_at"]
    await env.api.ok("PATCH", f"{BASE}/conversations/{c1}/status", owner, json={"status": "closed"})

    async def ids(**params: str) -> list[str]:
        data = await env.api.ok("GET", f"{BASE}/conversations", owner, params=params)
        return [c["id"] for c in data["items"]]

    assert await ids() == [c3, c2, c1]  # newest first
    assert await ids(bot_id=a["id"]) == [c2, c1]
    assert await ids(visitor_id="bob") == [c2]
    assert await ids(status="closed") == [c1]
    assert await ids(status="active") == [c3, c2]
    assert set(await ids(since=since)) <= {c2, c3}
    assert c2 in await ids(since=since)
    assert await ids(since="2999-01-01T00:00:00Z") == []
    r = await env.api.call("GET", f"{BASE}/conversations", owner, params={"limit": "2"})
    body = r.json()
    assert [c["id"] for c in body["data"]["items"]] == [c3, c2]
    assert body["meta"]["has_more"] is True
    rest = await ids(limit="2", cursor=body["meta"]["next_cursor"])
    assert rest == [c1]
    for params, field in [
        ({"status": "lost"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "zz"}, "cursor"),
    ]:
        r = await env.api.call("GET", f"{BASE}/conversations", owner, params=params)
        assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith(field)
    stranger = await other_tenant_user(env, "stranger")
    assert (await env.api.ok("GET", f"{BASE}/conversations", stranger))["items"] == []
    r = await env.api.call("GET", f"{BASE}/conversations/{c1}", stranger)
    envelope_error(r, 404, "CONVERSATION_NOT_FOUND")


async def test_transcript_shape(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    cid = await start(env, owner, bot, "What are your refund terms?")
    t = await env.api.ok("GET", f"{BASE}/conversations/{cid}", owner)
    assert t["id"] == cid
    assert t["bot_id"] == bot["id"]
    assert t["status"] == "active"
    assert ISO_MS.match(t["started_at"])
    question, answer = t["messages"]
    assert set(question) == {"id", "role", "content", "created_at"}
    assert (question["role"], question["content"]) == ("user", "What are your refund terms?")
    assert set(answer) == {
        "id",
        "role",
        "content",
        "created_at",
        "citations",
        "retrieved_chunks",
        "tokens",
        "latency_ms",
        "finish_reason",
    }
    assert answer["tokens"] > 0
    assert t["escalations"] == []


async def test_status_changes(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    cid = await start(env, owner, bot)
    path = f"{BASE}/conversations/{cid}/status"
    data = await env.api.ok("PATCH", path, owner, json={"status": "closed"})
    assert data["status"] == "closed"
    r = await env.api.call(
        "POST", f"{BASE}/conversations/{cid}/messages", owner, json={"content": "x"}
    )
    envelope_error(r, 409, "CONVERSATION_CLOSED")
    assert (await env.api.ok("PATCH", path, owner, json={"status": "active"}))["status"] == "active"
    for status in ("escalated", "gone", None):
        r = await env.api.call("PATCH", path, owner, json={"status": status})
        envelope_error(r, 422, "VALIDATION_ERROR")
    r = await env.api.call(
        "PATCH", f"{BASE}/conversations/cnv_x/status", owner, json={"status": "closed"}
    )
    envelope_error(r, 404, "CONVERSATION_NOT_FOUND")


# ------------------------------------------------------------------ tone


async def test_tone_get_defaults_put_and_refusals(env: Env) -> None:
    owner = await user(env, "owner")
    member = await user(env, "member")
    bot = await active_bot(env, owner)
    path = f"{BASE}/bots/{bot['id']}/tone"
    tone = await env.api.ok("GET", path, member)
    assert tone == {
        "persona_name": None,
        "persona_description": None,
        "formality": "neutral",
        "verbosity": "concise",
        "empathy_level": "medium",
        "language": None,
        "strict_language": False,
        "terminology": [],
        "topics_in_scope": [],
        "topics_out_of_scope": [],
        "custom_instructions": None,
    }
    new = await env.api.ok(
        "PUT", path, owner, json={"formality": "casual", "language": "nl", "strict_language": True}
    )
    assert (new["formality"], new["language"], new["strict_language"]) == ("casual", "nl", True)
    assert await env.api.ok("GET", path, owner) == new
    # PUT replaces: absent fields go back to their defaults
    again = await env.api.ok("PUT", path, owner, json={"verbosity": "terse"})
    assert (again["formality"], again["language"], again["verbosity"]) == ("neutral", None, "terse")
    for body, field in [
        ({"strict_language": True}, "strict_language"),
        ({"formality": "stiff"}, "formality"),
        ({"terminology": [1]}, "terminology[0]"),
    ]:
        err = envelope_error(await env.api.call("PUT", path, owner, json=body), 422, "TONE_INVALID")
        assert err["message"].startswith(field)
    envelope_error(await env.api.call("PUT", path, member, json={}), 403, "AUTHZ_PERMISSION_DENIED")


async def test_tone_shapes_the_system_prompt_of_the_chat(env: Env) -> None:
    admin = await user(env, "admin", admin=True)
    bot = await active_bot(env, admin)
    await env.api.ok(
        "PUT",
        f"{BASE}/bots/{bot['id']}/tone",
        admin,
        json={
            "persona_name": "Ada",
            "formality": "formal",
            "topics_out_of_scope": ["politics"],
            "custom_instructions": "Sign with -- Ada",
        },
    )
    s = await chat(
        env, admin, {"bot_id": bot["id"], "message": "x"}, params={"include_system_prompt": "true"}
    )
    prompt = s.first("system_prompt")["system_prompt"]
    assert prompt.index("You are Ada.") < prompt.index("formal") < prompt.index("politics")
    assert prompt.endswith("Sign with -- Ada")


async def test_tone_preview(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    path = f"{BASE}/bots/{bot['id']}/tone/preview"
    body = {
        "tone": {"formality": "formal", "verbosity": "verbose"},
        "sample_message": "What are your refund terms?",
    }
    data = await env.api.ok("POST", path, owner, json=body)
    assert data["response"] == "echo: What are your refund terms?"
    assert isinstance(data["tokens"], int)
    assert data["tokens"] > 0
    assert data["tone"]["formality"] == "formal"
    # The stored tone is untouched.
    assert (await env.api.ok("GET", f"{BASE}/bots/{bot['id']}/tone", owner))[
        "formality"
    ] == "neutral"
    r = await env.api.call(
        "POST", path, owner, json={"tone": {"formality": "x"}, "sample_message": "q"}
    )
    envelope_error(r, 422, "TONE_INVALID")
    r = await env.api.call("POST", path, owner, json={"tone": {}})
    envelope_error(r, 422, "VALIDATION_ERROR")
    narrow = await env.api.ok(
        "POST", "/v1/api-keys", owner, status=201, json={"name": "k", "scopes": ["rooms:read"]}
    )
    r = await env.api.call("POST", path, bearer(narrow["key"]), json=body)
    envelope_error(r, 403, "AUTH_INSUFFICIENT_SCOPE")


# ------------------------------------------------------------------ deletion hooks


async def test_deletion_hooks_run_inside_the_deleting_transaction(tmp_path: Path) -> None:
    seen: list[tuple[str, str, bool]] = []

    def hook(conn: Any, ref: BotRef) -> None:
        still_there = conn.execute(
            "SELECT COUNT(*) FROM scaibot_bots WHERE bot_id = ?", (ref.bot_id,)
        ).fetchone()[0]
        seen.append((ref.bot_id, ref.collection_id, bool(still_there) and conn.in_transaction))

    async with scaibot_env(tmp_path, deletion_hooks=(hook,)) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        r = await env.api.call("DELETE", f"{BASE}/bots/{bot['id']}", owner)
        assert r.status_code == 204
    assert seen == [(bot["id"], bot["collection_id"], True)]


async def test_a_failing_hook_rolls_the_deletion_back(tmp_path: Path) -> None:
    def hook(conn: Any, ref: BotRef) -> None:
        raise RuntimeError("knowledge store unavailable")

    async with scaibot_env(tmp_path, deletion_hooks=(hook,)) as env:
        owner = await user(env, "owner")
        bot = await active_bot(env, owner)
        r = await env.api.call("DELETE", f"{BASE}/bots/{bot['id']}", owner)
        assert r.status_code == 500
        assert "Traceback" not in r.text
        assert (await env.api.ok("GET", f"{BASE}/bots/{bot['id']}", owner))["id"] == bot["id"]


@pytest.mark.parametrize("path", ["/bots", "/chat", "/handoffs", "/conversations"])
async def test_routes_live_under_the_module_prefix(env: Env, path: str) -> None:
    r = await env.api.call("GET", f"/v1{path}")
    assert r.status_code == 404
