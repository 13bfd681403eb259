"""``/v1/ai/participants`` and AI members through every member path (CONTRACT 12, 6, 8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.ai.ai_support import Env, ai_server, open_ws, until
from tests.support import envelope_error, envelope_ok


async def test_create_list_get_and_the_refusals(env: Env) -> None:
    created = await env.api.ok(
        "POST",
        "/v1/ai/participants",
        env.admin,
        status=201,
        json={
            "name": "reviewer",
            "display_name": "Design Reviewer",
            "type": "persona",
            "model": "dev/echo",
            "system_prompt": "Review designs.",
            "engagement": "always",
        },
    )
    ai = created["id"]
    assert ai.startswith("ai-")
    assert created["type"] == "persona"
    assert created["display_name"] == "Design Reviewer"
    assert created["engagement"] == "always"
    assert created["tenant_id"] == "ten_default"
    assert created["created_by"] == env.admin.participant_id
    listed = await env.api.ok("GET", "/v1/ai/participants", env.admin)
    assert [a["id"] for a in listed["items"]] == [ai]
    assert await env.api.ok("GET", f"/v1/ai/participants/{ai}", env.admin) == created

    base = {"name": "x", "type": "bot", "model": "dev/echo"}
    r = await env.api.call(
        "POST", "/v1/ai/participants", env.admin, json={**base, "model": "nope/none"}
    )
    assert envelope_error(r, 404, "MODEL_NOT_FOUND")["message"].startswith("model")
    for field, bad in (("type", "human"), ("engagement", "keyword"), ("name", "")):
        r = await env.api.call("POST", "/v1/ai/participants", env.admin, json={**base, field: bad})
        assert envelope_error(r, 400, "SW_INVALID_PARAM")["message"].startswith(field)
    r = await env.api.call("GET", "/v1/ai/participants/ai-nobody", env.admin)
    envelope_error(r, 404, "SW_AI_NOT_FOUND")
    r = await env.api.call("GET", "/v1/ai/participants")
    assert r.status_code == 401


async def test_only_tenant_admins_create_unless_open_creation(tmp_path: Path) -> None:
    async with ai_server(tmp_path / "data", dev=False, registration_enabled=True) as env:
        body = {"name": "x", "type": "agent", "model": "dev/echo"}
        r = await env.api.call("POST", "/v1/ai/participants", env.admin, json=body)
        envelope_error(r, 403, "SW_AUTH_INSUFFICIENT_PERMISSION")
        with sqlite3.connect(env.running.db_path) as db:
            db.execute(
                "UPDATE participants SET is_admin = 1 WHERE participant_id = ?",
                (env.admin.participant_id,),
            )
        envelope_ok(await env.api.call("POST", "/v1/ai/participants", env.admin, json=body), 201)


async def test_delete_by_creator_or_admin_takes_the_ai_out_of_its_rooms(env: Env) -> None:
    bob = await env.api.register("bob")
    carol = await env.api.register("carol")
    mine = await env.api.ok(
        "POST",
        "/v1/ai/participants",
        bob,
        status=201,
        json={"name": "bobs", "type": "bot", "model": "dev/echo"},
    )
    room = await env.api.room(bob, name="r")
    await env.api.ok(
        "POST", f"/v1/rooms/{room}/members", bob, status=201, json={"type": "bot", "id": mine["id"]}
    )
    r = await env.api.call("DELETE", f"/v1/ai/participants/{mine['id']}", carol)
    envelope_error(r, 403, "SW_AUTH_INSUFFICIENT_PERMISSION")
    gone = await env.api.ok("DELETE", f"/v1/ai/participants/{mine['id']}", bob)
    assert gone == {"id": mine["id"], "deleted": True}
    members = await env.api.ok("GET", f"/v1/rooms/{room}/members", bob)
    assert mine["id"] not in {m["participant_id"] for m in members["items"]}
    r = await env.api.call("DELETE", f"/v1/ai/participants/{mine['id']}", bob)
    envelope_error(r, 404, "SW_AI_NOT_FOUND")
    assert (await env.api.ok("GET", "/v1/ai/participants", bob))["items"] == []


async def test_ais_join_through_invite_and_follow_the_room_rules(env: Env) -> None:
    ai = await env.ai("helper")
    room = await env.api.room(env.admin, name="r")
    async with open_ws(env.running, env.admin) as ws:
        await env.api.ok("POST", f"/v1/rooms/{room}/invite", env.admin, json={"participant_id": ai})

        def joined(frame: dict[str, object]) -> bool:
            content = frame.get("content")
            return (
                frame["type"] == "swp.room.member"
                and isinstance(content, dict)
                and content.get("participant_id") == ai
                and content.get("membership") == "join"
            )

        await until(ws, joined)  # the AI accepted the invite itself
    snap = await env.api.ok("GET", f"/v1/rooms/{room}/state", env.admin)
    members = {m["participant_id"]: m for m in snap["members"]}
    assert members[ai]["presence"] == "online"
    assert members[ai]["participant"]["participant_type"] == "bot"
    # A frozen room takes no engage; a non-member cannot engage or stop.
    eve = await env.api.register("eve")
    r = await env.api.call("POST", f"/v1/rooms/{room}/ai/engage", eve, json={"participant_id": ai})
    envelope_error(r, 403, "SW_NOT_MEMBER")
    r = await env.api.call("POST", f"/v1/rooms/{room}/ai/stop", eve, json={})
    envelope_error(r, 403, "SW_NOT_MEMBER")
    await env.api.send(env.admin, room, "something to answer")
    await env.api.ok("POST", f"/v1/rooms/{room}/close", env.admin)
    r = await env.api.call(
        "POST", f"/v1/rooms/{room}/ai/engage", env.admin, json={"participant_id": ai}
    )
    envelope_error(r, 409, "SW_ROOM_FROZEN")
    r = await env.api.call(
        "POST", f"/v1/rooms/{room}/ai/engage", env.admin, json={"participant_id": "ai-nobody"}
    )
    envelope_error(r, 404, "SW_AI_NOT_FOUND")


async def test_viewers_can_neither_engage_nor_stop(env: Env) -> None:
    """Viewers are read-only (CONTRACT 6): engaging or stopping an AI is a write."""
    ai = await env.ai("helper")
    vic = await env.api.register("vic")
    room = await env.api.room(env.admin, name="r")
    await env.api.ok(
        "POST",
        f"/v1/rooms/{room}/members",
        env.admin,
        status=201,
        json={"type": "user", "id": vic.participant_id, "role": "viewer"},
    )
    await env.api.send(env.admin, room, "something to answer")
    r = await env.api.call("POST", f"/v1/rooms/{room}/ai/engage", vic, json={"participant_id": ai})
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
    r = await env.api.call("POST", f"/v1/rooms/{room}/ai/stop", vic, json={})
    envelope_error(r, 403, "SW_ROOM_FORBIDDEN")
