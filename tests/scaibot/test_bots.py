"""Bots: create (every field and default), list, get, PUT, PATCH status, DELETE, tenants."""

from __future__ import annotations

from typing import Any

import pytest

from tests.scaibot.support import (
    BASE,
    Env,
    active_bot,
    bearer,
    chat,
    create_bot,
    mint,
    other_tenant_user,
    user,
)
from tests.support import envelope_error, envelope_ok

MIN = {"name": "Support", "slug": "support", "model": "dev/echo"}


async def test_create_gives_every_field_its_default(env: Env) -> None:
    owner = await user(env, "owner")
    r = await env.api.call("POST", f"{BASE}/bots", owner, json=MIN)
    bot = envelope_ok(r, 201)
    assert bot["id"].startswith("bot_")
    assert bot["collection_id"].startswith("col_")
    expected = {
        "name": "Support",
        "slug": "support",
        "model": "dev/echo",
        "display_name": "Support",
        "welcome_message": None,
        "placeholder_text": None,
        "primary_color": None,
        "max_tokens_per_response": 500,
        "max_context_messages": 20,
        "knowledge_enabled": False,
        "knowledge_mode": "managed",
        "knowledge_collection_id": None,
        "knowledge_settings": {
            "top_k": 5,
            "score_threshold": 0.3,
            "max_chunks_per_doc": None,
            "deduplicate": True,
        },
        "status": "draft",
        "tenant_id": "ten_default",
        "created_by": owner.participant_id,
    }
    assert {k: bot[k] for k in expected} == expected
    assert bot["created_at"].endswith("Z")


async def test_create_takes_every_field(env: Env) -> None:
    owner = await user(env, "owner")
    body = {
        **MIN,
        "display_name": "Ada",
        "welcome_message": "Hi!",
        "placeholder_text": "Ask me",
        "primary_color": "#1a73e8",
        "max_tokens_per_response": 64,
        "max_context_messages": 4,
        "knowledge_enabled": True,
        "knowledge_settings": {"top_k": 3, "score_threshold": 0.5},
        "status": "active",
    }
    bot = await env.api.ok("POST", f"{BASE}/bots", owner, status=201, json=body)
    for key, value in body.items():
        if key != "knowledge_settings":
            assert bot[key] == value, key
    assert bot["knowledge_settings"]["top_k"] == 3
    assert bot["knowledge_settings"]["deduplicate"] is True
    assert await env.api.ok("GET", f"{BASE}/bots/{bot['id']}", owner) == bot


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"slug": "A"}, "slug"),
        ({"slug": "-bad"}, "slug"),
        ({"slug": "x" * 64}, "slug"),
        ({"model": 3}, "model"),
        ({"primary_color": "blue"}, "primary_color"),
        ({"max_tokens_per_response": 0}, "max_tokens_per_response"),
        ({"max_context_messages": -1}, "max_context_messages"),
        ({"knowledge_enabled": "yes"}, "knowledge_enabled"),
        ({"knowledge_mode": "borrowed"}, "knowledge_mode"),
        ({"knowledge_mode": "linked"}, "knowledge_collection_id"),
        ({"knowledge_settings": {"top_k": 0}}, "knowledge_settings.top_k"),
        ({"status": "deleted"}, "status"),
    ],
)
async def test_create_refusals_name_the_field(env: Env, change: dict[str, Any], field: str) -> None:
    owner = await user(env, "owner")
    r = await env.api.call("POST", f"{BASE}/bots", owner, json={**MIN, **change})
    err = envelope_error(r, 422, "VALIDATION_ERROR")
    assert err["message"].startswith(field)


async def test_malformed_json_and_no_token(env: Env) -> None:
    owner = await user(env, "owner")
    r = await env.api.call("POST", f"{BASE}/bots", owner, content=b"{nope")
    envelope_error(r, 422, "VALIDATION_ERROR")
    envelope_error(await env.api.call("GET", f"{BASE}/bots"), 401, "AUTH_TOKEN_MISSING")
    envelope_error(
        await env.api.call("GET", f"{BASE}/bots", bearer("swa_nope")), 401, "AUTH_TOKEN_INVALID"
    )


async def test_slug_taken_and_model_unknown(env: Env) -> None:
    owner = await user(env, "owner")
    await create_bot(env, owner)
    r = await env.api.call("POST", f"{BASE}/bots", owner, json=MIN)
    assert envelope_error(r, 409, "BOT_SLUG_TAKEN")["details"] == {"slug": "support"}
    r = await env.api.call(
        "POST", f"{BASE}/bots", owner, json={**MIN, "slug": "x2", "model": "gpt-9"}
    )
    envelope_error(r, 422, "BOT_INVALID_MODEL")
    # Another tenant may use the same slug.
    stranger = await other_tenant_user(env, "stranger")
    await env.api.ok("POST", f"{BASE}/bots", stranger, status=201, json=MIN)


async def test_list_pages_filters_and_limits(env: Env) -> None:
    owner = await user(env, "owner")
    ids = []
    for i in range(5):
        status = "active" if i % 2 else "draft"
        ids.append((await create_bot(env, owner, slug=f"bot-{i}", status=status))["id"])
    r = await env.api.call("GET", f"{BASE}/bots", owner, params={"limit": "2"})
    body = r.json()
    assert [b["id"] for b in body["data"]["items"]] == ids[:2]
    assert body["meta"]["has_more"] is True
    cursor = body["meta"]["next_cursor"]
    assert body["data"]["next_cursor"] == cursor
    seen = [b["id"] for b in body["data"]["items"]]
    while cursor:
        page = await env.api.call(
            "GET", f"{BASE}/bots", owner, params={"limit": "2", "cursor": cursor}
        )
        seen += [b["id"] for b in page.json()["data"]["items"]]
        cursor = page.json()["meta"]["next_cursor"]
    assert seen == ids
    active = await env.api.ok("GET", f"{BASE}/bots", owner, params={"status": "active"})
    assert [b["id"] for b in active["items"]] == [ids[1], ids[3]]
    default = await env.api.ok("GET", f"{BASE}/bots", owner)
    assert len(default["items"]) == 5
    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"status": "gone"}, "status"),
        ({"cursor": "abc"}, "cursor"),
    ]:
        err = envelope_error(
            await env.api.call("GET", f"{BASE}/bots", owner, params=params), 422, "VALIDATION_ERROR"
        )
        assert err["message"].startswith(field)


async def test_limit_above_100_is_clamped(env: Env) -> None:
    owner = await user(env, "owner")
    await create_bot(env, owner)
    data = await env.api.ok("GET", f"{BASE}/bots", owner, params={"limit": "1000"})
    assert len(data["items"]) == 1


async def test_put_replaces_and_keeps_status(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner, welcome_message="old", max_context_messages=3)
    await create_bot(env, owner, slug="other")
    put = {"name": "Renamed", "slug": "renamed", "model": "dev/echo", "placeholder_text": "?"}
    new = await env.api.ok("PUT", f"{BASE}/bots/{bot['id']}", owner, json=put)
    assert new["name"] == new["display_name"] == "Renamed"
    assert new["welcome_message"] is None  # replaced, not merged
    assert new["max_context_messages"] == 20
    assert new["status"] == "active"
    assert new["collection_id"] == bot["collection_id"]
    r = await env.api.call("PUT", f"{BASE}/bots/{bot['id']}", owner, json={**put, "slug": "other"})
    envelope_error(r, 409, "BOT_SLUG_TAKEN")
    r = await env.api.call("PUT", f"{BASE}/bots/{bot['id']}", owner, json={**put, "model": "nope"})
    envelope_error(r, 422, "BOT_INVALID_MODEL")
    r = await env.api.call("PUT", f"{BASE}/bots/bot_missing", owner, json=put)
    envelope_error(r, 404, "BOT_NOT_FOUND")


async def test_patch_status_any_order(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await create_bot(env, owner)
    for status in ["active", "archived", "draft", "archived", "active"]:
        data = await env.api.ok(
            "PATCH", f"{BASE}/bots/{bot['id']}/status", owner, json={"status": status}
        )
        assert data["status"] == status
    r = await env.api.call("PATCH", f"{BASE}/bots/{bot['id']}/status", owner, json={"status": "x"})
    envelope_error(r, 422, "VALIDATION_ERROR")


async def test_tenant_scoping(env: Env) -> None:
    admin = await user(env, "admin", admin=True)  # first registrant in --dev: tenant admin
    owner = await user(env, "owner")
    member = await user(env, "member")
    stranger = await other_tenant_user(env, "stranger", admin=True)
    bot = await create_bot(env, owner)
    path = f"{BASE}/bots/{bot['id']}"
    # Every participant of the tenant may list and read.
    assert (await env.api.ok("GET", path, member))["id"] == bot["id"]
    assert len((await env.api.ok("GET", f"{BASE}/bots", member))["items"]) == 1
    # Others may not change it; the creator and the tenant admin may.
    r = await env.api.call("PATCH", path + "/status", member, json={"status": "active"})
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")
    envelope_error(await env.api.call("DELETE", path, member), 403, "AUTHZ_PERMISSION_DENIED")
    await env.api.ok("PATCH", path + "/status", admin, json={"status": "active"})
    # Other tenants see nothing at all.
    err = envelope_error(await env.api.call("GET", path, stranger), 404, "BOT_NOT_FOUND")
    assert err["details"] == {"bot_id": bot["id"]}
    assert (await env.api.ok("GET", f"{BASE}/bots", stranger))["items"] == []
    for method, sub in [("PUT", ""), ("DELETE", ""), ("GET", "/tone"), ("GET", "/escalations")]:
        r = await env.api.call(method, path + sub, stranger, json=MIN)
        envelope_error(r, 404, "BOT_NOT_FOUND")
    s = await chat(env, stranger, {"bot_id": bot["id"], "message": "hi"})
    assert (s.status, s.body["error"]["code"]) == (404, "BOT_NOT_FOUND")
    r = await env.api.call("DELETE", path, admin)
    assert r.status_code == 204


async def test_linked_knowledge_needs_a_collection_of_the_tenant(env: Env) -> None:
    owner = await user(env, "owner")
    source = await create_bot(env, owner, slug="source")
    linked = {
        "slug": "linked",
        "knowledge_enabled": True,
        "knowledge_mode": "linked",
        "knowledge_collection_id": source["collection_id"],
    }
    bot = await create_bot(env, owner, **linked)
    assert bot["knowledge_collection_id"] == source["collection_id"]
    r = await env.api.call(
        "POST",
        f"{BASE}/bots",
        owner,
        json={**MIN, **linked, "slug": "l2", "knowledge_collection_id": "col_nope"},
    )
    envelope_error(r, 404, "KNOWLEDGE_COLLECTION_NOT_FOUND")
    stranger = await other_tenant_user(env, "stranger")
    r = await env.api.call("POST", f"{BASE}/bots", stranger, json={**MIN, **linked})
    envelope_error(r, 404, "KNOWLEDGE_COLLECTION_NOT_FOUND")


async def test_delete_keeps_conversations_anonymised_and_removes_the_rest(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    path = f"{BASE}/bots/{bot['id']}"
    await env.api.ok("PUT", path + "/tone", owner, json={"formality": "formal"})
    rule = {"name": "r", "trigger_type": "explicit", "action_type": "scaiqueue"}
    await env.api.ok("POST", path + "/escalations", owner, status=201, json=rule)
    token = await mint(
        env,
        owner,
        bot["id"],
        visitor_id="usr_1",
        visitor_email="a@b.c",
        visitor_name="Al",
        metadata={"plan": "pro"},
    )
    s = await chat(env, bearer(token["token"]), {"bot_id": bot["id"], "message": "hello"})
    cid = s.first("start")["conversation_id"]
    before = await env.api.ok("GET", f"{BASE}/conversations/{cid}", owner)
    assert (before["visitor_email"], before["metadata"]) == ("a@b.c", {"plan": "pro"})
    r = await env.api.call("DELETE", path, owner)
    assert r.status_code == 204
    assert r.content == b""
    envelope_error(await env.api.call("GET", path, owner), 404, "BOT_NOT_FOUND")
    after = await env.api.ok("GET", f"{BASE}/conversations/{cid}", owner)
    assert (after["visitor_id"], after["visitor_email"], after["visitor_name"]) == (
        None,
        None,
        None,
    )
    assert after["metadata"] is None
    assert [m["content"] for m in after["messages"]] == ["hello", "echo: hello"]

    def leftovers(conn: Any) -> list[int]:
        return [
            conn.execute(f"SELECT COUNT(*) FROM {table} WHERE bot_id = ?", (bot["id"],)).fetchone()[
                0
            ]
            for table in ("scaibot_rules", "scaibot_tones", "scaibot_embed_tokens", "scaibot_bots")
        ]

    assert await env.running.writer.write(leftovers) == [0, 0, 0, 0]
    # The visitor's token died with the bot.
    s = await chat(env, bearer(token["token"]), {"bot_id": bot["id"], "message": "again"})
    assert (s.status, s.body["error"]["code"]) == (403, "EMBED_TOKEN_INVALID")
    envelope_error(await env.api.call("DELETE", path, owner), 404, "BOT_NOT_FOUND")
