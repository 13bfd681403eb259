"""Embed tokens: mint, revoke, embed-info, and the refusal matrix (nothing leaked)."""

from __future__ import annotations

import os
import stat
from datetime import datetime

from tests.scaibot.support import (
    BASE,
    Env,
    Stream,
    active_bot,
    bearer,
    chat,
    create_bot,
    mint,
    user,
)
from tests.support import envelope_error, envelope_ok


def refused(s: Stream, status: int, code: str) -> dict[str, object]:
    assert s.status == status, s
    assert s.events == []
    assert s.body["status"] == "error"
    assert s.body["error"]["code"] == code
    assert set(s.body) == {"status", "error", "meta"}
    error: dict[str, object] = s.body["error"]
    return error


async def test_mint_defaults_and_bounds(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    r = await env.api.call("POST", f"{BASE}/bots/{bot['id']}/embed-token", owner, json={})
    data = envelope_ok(r, 201)
    assert data["token"].startswith("sbt_")
    assert data["bot_id"] == bot["id"]
    assert data["visitor_id"].startswith("vis_")
    assert data["widget_url"].endswith("/v1/modules/scaibot/widget.js")
    expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp()
    assert abs(expires - (env.clock() / 1000 + 3600)) < 60
    for ttl in (59, 86401, "60", True):
        r = await env.api.call(
            "POST", f"{BASE}/bots/{bot['id']}/embed-token", owner, json={"ttl_seconds": ttl}
        )
        assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith("ttl_seconds")
    for ttl in (60, 86400):
        await mint(env, owner, bot["id"], ttl_seconds=ttl)
    r = await env.api.call(
        "POST", f"{BASE}/bots/{bot['id']}/embed-token", owner, json={"metadata": "x" * 5000}
    )
    assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith("metadata")
    member = await user(env, "member")
    r = await env.api.call("POST", f"{BASE}/bots/{bot['id']}/embed-token", member, json={})
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")


async def test_visitor_fields_and_metadata_reach_the_conversation(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    token = await mint(
        env,
        owner,
        bot["id"],
        visitor_id="usr_42",
        visitor_email="v@example.org",
        visitor_name="Vee",
        metadata={"page": "/pricing", "n": [1, 2]},
    )
    s = await chat(env, bearer(token["token"]), {"bot_id": bot["id"], "message": "hi"})
    conv = await env.api.ok(
        "GET", f"{BASE}/conversations/{s.first('start')['conversation_id']}", owner
    )
    assert conv["visitor_id"] == "usr_42"
    assert conv["visitor_email"] == "v@example.org"
    assert conv["visitor_name"] == "Vee"
    assert conv["metadata"] == {"page": "/pricing", "n": [1, 2]}
    assert conv["channel"] == "embed"


async def test_embed_info_is_public_and_shows_display_fields_only(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await create_bot(
        env, owner, welcome_message="Hello!", placeholder_text="Ask", primary_color="#fff"
    )
    r = await env.api.call("GET", f"{BASE}/bots/{bot['id']}/embed-info")
    info = envelope_ok(r, 200)
    assert set(info) == {
        "bot_id",
        "display_name",
        "welcome_message",
        "placeholder_text",
        "primary_color",
        "widget_url",
    }
    assert (info["welcome_message"], info["primary_color"]) == ("Hello!", "#fff")
    assert "token" not in r.text
    await env.api.ok("PATCH", f"{BASE}/bots/{bot['id']}/status", owner, json={"status": "archived"})
    r = await env.api.call("GET", f"{BASE}/bots/{bot['id']}/embed-info")
    envelope_error(r, 404, "BOT_NOT_FOUND")
    envelope_error(
        await env.api.call("GET", f"{BASE}/bots/bot_none/embed-info"), 404, "BOT_NOT_FOUND"
    )


async def test_revoke(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    other = await active_bot(env, owner, slug="other")
    token = (await mint(env, owner, bot["id"]))["token"]
    path = f"{BASE}/bots/{bot['id']}/embed-token"
    r = await env.api.call(
        "DELETE", f"{BASE}/bots/{other['id']}/embed-token", owner, json={"token": token}
    )
    envelope_error(r, 404, "EMBED_TOKEN_NOT_FOUND")
    r = await env.api.call("DELETE", path, owner, json={"token": token[:-3] + "AAA"})
    envelope_error(r, 403, "EMBED_TOKEN_INVALID")
    r = await env.api.call("DELETE", path, owner, json={})
    envelope_error(r, 422, "VALIDATION_ERROR")
    assert await env.api.ok("DELETE", path, owner, json={"token": token}) == {
        "revoked": True,
        "bot_id": bot["id"],
    }
    await env.api.ok("DELETE", path, owner, json={"token": token})  # idempotent
    s = await chat(env, bearer(token), {"bot_id": bot["id"], "message": "hi"})
    refused(s, 403, "EMBED_TOKEN_INVALID")


async def test_refusal_matrix(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    other = await active_bot(env, owner, slug="other-bot")
    draft = await create_bot(env, owner, slug="draft-bot")
    archived = await active_bot(env, owner, slug="archived-bot")
    alice = (await mint(env, owner, bot["id"], visitor_id="alice"))["token"]
    bob = (await mint(env, owner, bot["id"], visitor_id="bob"))["token"]
    short = (await mint(env, owner, bot["id"], ttl_seconds=60))["token"]
    draft_token = (await mint(env, owner, draft["id"]))["token"]
    archived_token = (await mint(env, owner, archived["id"]))["token"]
    await env.api.ok(
        "PATCH", f"{BASE}/bots/{archived['id']}/status", owner, json={"status": "archived"}
    )
    first = await chat(env, bearer(alice), {"bot_id": bot["id"], "message": "secret plans"})
    alice_conv = first.first("start")["conversation_id"]

    # wrong bot
    refused(
        await chat(env, bearer(alice), {"bot_id": other["id"], "message": "x"}),
        403,
        "EMBED_TOKEN_INVALID",
    )
    # another visitor's conversation: not found, and nothing of it shown
    s = await chat(
        env, bearer(bob), {"bot_id": bot["id"], "conversation_id": alice_conv, "message": "x"}
    )
    assert "secret" not in str(refused(s, 404, "CONVERSATION_NOT_FOUND"))
    r = await env.api.call("GET", f"{BASE}/conversations/{alice_conv}", bearer(bob))
    assert "secret" not in r.text
    envelope_error(r, 404, "CONVERSATION_NOT_FOUND")
    listed = await env.api.ok("GET", f"{BASE}/conversations", bearer(bob))
    assert listed["items"] == []
    # draft bot: embed tokens refused, operators may chat
    refused(
        await chat(env, bearer(draft_token), {"bot_id": draft["id"], "message": "x"}),
        404,
        "BOT_NOT_FOUND",
    )
    assert (await chat(env, owner, {"bot_id": draft["id"], "message": "x"})).names()[-1] == "done"
    # archived bot: 404 for everyone
    refused(
        await chat(env, bearer(archived_token), {"bot_id": archived["id"], "message": "x"}),
        404,
        "BOT_NOT_FOUND",
    )
    refused(
        await chat(env, owner, {"bot_id": archived["id"], "message": "x"}), 404, "BOT_NOT_FOUND"
    )
    # tampered signature, tampered claims, garbage
    body = {"bot_id": bot["id"], "message": "x"}
    head, _, mac = alice.partition(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for bad in (f"{head}.{flipped}", head[:-2] + "xx." + mac, "sbt_garbage", "sbt_"):
        refused(await chat(env, bearer(bad), body), 403, "EMBED_TOKEN_INVALID")
    # expired (the server's clock moves past the 60 s ttl)
    env.clock.advance(61)
    refused(await chat(env, bearer(short), body), 403, "EMBED_TOKEN_EXPIRED")
    assert (await chat(env, bearer(alice), body)).names()[-1] == "done"


async def test_an_embed_token_reaches_nothing_else(env: Env) -> None:
    owner = await user(env, "owner")
    bot = await active_bot(env, owner)
    visitor = bearer((await mint(env, owner, bot["id"]))["token"])
    s = await chat(env, visitor, {"bot_id": bot["id"], "message": "hi"})
    cid = s.first("start")["conversation_id"]
    for method, path in [
        ("GET", f"{BASE}/bots"),
        ("GET", f"{BASE}/bots/{bot['id']}"),
        ("GET", f"{BASE}/bots/{bot['id']}/tone"),
        ("GET", f"{BASE}/bots/{bot['id']}/escalations"),
        ("POST", f"{BASE}/bots/{bot['id']}/embed-token"),
        ("PATCH", f"{BASE}/conversations/{cid}/status"),
        ("POST", f"{BASE}/conversations/{cid}/messages"),
        ("GET", f"{BASE}/handoffs"),
    ]:
        r = await env.api.call(method, path, visitor, json={"status": "closed", "content": "x"})
        envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")
    envelope_error(await env.api.call("GET", "/v1/me", visitor), 401, "SW_AUTH_INVALID_TOKEN")
    envelope_error(await env.api.call("GET", "/v1/rooms", visitor), 401, "SW_AUTH_INVALID_TOKEN")
    # What it may do: its own conversations, without internals.
    own = await env.api.ok("GET", f"{BASE}/conversations/{cid}", visitor)
    assert "retrieved_chunks" not in own["messages"][1]
    listed = await env.api.ok("GET", f"{BASE}/conversations", visitor)
    assert [c["id"] for c in listed["items"]] == [cid]


async def test_secret_file_is_private(env: Env) -> None:
    path = env.data_dir / "scaibot_embed.key"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600
    assert len(path.read_text().strip()) >= 32
