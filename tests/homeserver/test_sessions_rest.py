"""Sessions REST (CONTRACT 11): every endpoint, refusal and code, with dev/echo."""

from __future__ import annotations

from pathlib import Path

from homeserver.app import Running
from storage import db
from tests.support import ISO_MS, Api, User, envelope_error, envelope_ok, open_db

SESSION_FIELDS = {
    "id",
    "model",
    "title",
    "system_prompt",
    "metadata",
    "status",
    "created_at",
    "updated_at",
    "message_count",
    "generating_message_id",
}


async def _users(api: Api) -> tuple[User, User, User]:
    admin = await api.register("admin")  # the first dev registrant is the tenant admin
    return admin, await api.register("alice"), await api.register("bob")


async def _session(api: Api, user: User, **body: object) -> dict[str, object]:
    body.setdefault("model", "dev/echo")
    data: dict[str, object] = await api.ok("POST", "/v1/sessions", user, status=201, json=body)
    return data


async def _key(api: Api, user: User, scopes: list[str]) -> User:
    data = await api.ok(
        "POST", "/v1/api-keys", user, status=201, json={"name": "k", "scopes": scopes}
    )
    return User(user.participant_id, data["key"], "", user.username)


async def test_create_get_and_send_a_message(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/sessions",
        alice,
        json={
            "model": "dev/echo",
            "title": "Product planning",
            "system_prompt": "You are a product strategist.",
            "metadata": {"project_id": "proj_123"},
        },
    )
    s = envelope_ok(r, 201)
    assert set(s) == SESSION_FIELDS
    assert s["id"].startswith("sess_")
    assert (s["model"], s["title"], s["status"], s["message_count"]) == (
        "dev/echo",
        "Product planning",
        "active",
        0,
    )
    assert s["metadata"] == {"project_id": "proj_123"}
    assert ISO_MS.match(s["created_at"])
    assert ISO_MS.match(s["updated_at"])

    r = await api.call(
        "POST", f"/v1/sessions/{s['id']}/messages", alice, json={"content": "what now?"}
    )
    reply = envelope_ok(r, 200)
    assert reply["content"] == "echo: what now?"
    assert reply["finish_reason"] == "stop"
    assert reply["message_id"].startswith("msg_")
    assert reply["user_message_id"].startswith("msg_")
    assert reply["usage"]["completion_tokens"] == 3
    assert reply["usage"]["prompt_tokens"] == 7  # dev/echo counts words: system 5 + user 2

    full = await api.ok("GET", f"/v1/sessions/{s['id']}", alice)
    assert full["message_count"] == 2
    assert full["generating_message_id"] is None
    user_msg, bot_msg = full["messages"]
    assert user_msg == {
        "id": reply["user_message_id"],
        "role": "user",
        "content": "what now?",
        "created_at": user_msg["created_at"],
    }
    assert bot_msg["id"] == reply["message_id"]
    assert (bot_msg["role"], bot_msg["content"], bot_msg["finish_reason"]) == (
        "assistant",
        "echo: what now?",
        "stop",
    )
    assert bot_msg["usage"] == {"prompt_tokens": 7, "completion_tokens": 3}


async def test_history_is_sent_to_the_model(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice)
    for text in ("one", "two three"):
        await api.ok("POST", f"/v1/sessions/{s['id']}/messages", alice, json={"content": text})
    reply = await api.ok("POST", f"/v1/sessions/{s['id']}/messages", alice, json={"content": "x"})
    # prompt = every prompt message in words: one, echo: one, two three, echo: two three, x
    assert reply["usage"]["prompt_tokens"] == 1 + 2 + 2 + 3 + 1


async def test_max_tokens_limits_the_reply(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice)
    reply = await api.ok(
        "POST",
        f"/v1/sessions/{s['id']}/messages",
        alice,
        json={"content": "a b c d", "max_tokens": 2, "temperature": 0.0},
    )
    assert (reply["content"], reply["finish_reason"]) == ("echo: a", "length")


async def test_unknown_model_is_model_not_found(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call("POST", "/v1/sessions", alice, json={"model": "no/such"})
    envelope_error(r, 404, "MODEL_NOT_FOUND")


CREATE_REFUSALS: list[tuple[dict[str, object], str]] = [
    ({}, "model"),
    ({"model": 3}, "model"),
    ({"model": "dev/echo", "title": 5}, "title"),
    ({"model": "dev/echo", "title": "t" * 201}, "title"),
    ({"model": "dev/echo", "system_prompt": "s" * 40000}, "system_prompt"),
    ({"model": "dev/echo", "metadata": [1]}, "metadata"),
    ({"model": "dev/echo", "metadata": {"k": "v" * 20000}}, "metadata"),
    (
        {
            "model": "dev/echo",
            "metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
        },
        "metadata",
    ),
]

SEND_REFUSALS: list[tuple[dict[str, object], str]] = [
    ({}, "content"),
    ({"content": ""}, "content"),
    ({"content": "é" * 40000}, "content"),  # 80 000 bytes
    ({"content": "hi", "max_tokens": 0}, "max_tokens"),
    ({"content": "hi", "max_tokens": 32769}, "max_tokens"),
    ({"content": "hi", "max_tokens": True}, "max_tokens"),
    ({"content": "hi", "temperature": 2.5}, "temperature"),
    ({"content": "hi", "temperature": -0.1}, "temperature"),
    ({"content": "hi", "temperature": "hot"}, "temperature"),
    ({"content": "hi", "stream": "yes"}, "stream"),
]


async def test_create_validation_names_the_field(api: Api) -> None:
    alice = await api.register("alice")
    for body, field in CREATE_REFUSALS:
        r = await api.call("POST", "/v1/sessions", alice, json=body)
        err = envelope_error(r, 422, "VALIDATION_ERROR")
        assert err["message"].startswith(field), (body, err)
    assert (await api.ok("GET", "/v1/sessions", alice))["items"] == []


async def test_send_validation_names_the_field(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice)
    for body, field in SEND_REFUSALS:
        r = await api.call("POST", f"/v1/sessions/{s['id']}/messages", alice, json=body)
        err = envelope_error(r, 422, "VALIDATION_ERROR")
        assert err["message"].startswith(field), (body, err)
    full = await api.ok("GET", f"/v1/sessions/{s['id']}", alice)
    assert full["messages"] == []  # nothing stored for a refused request


async def test_malformed_json_is_validation_error(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/sessions",
        alice,
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    envelope_error(r, 422, "VALIDATION_ERROR")


async def test_auth_and_scope(api: Api) -> None:
    alice = await api.register("alice")
    envelope_error(await api.call("GET", "/v1/sessions"), 401, "AUTH_TOKEN_MISSING")
    bad = User("?", "swa_nope", "", "x")
    envelope_error(await api.call("GET", "/v1/sessions", bad), 401, "AUTH_TOKEN_INVALID")
    s = await _session(api, alice)
    narrow = await _key(api, alice, ["rooms:read"])
    r = await api.call("POST", "/v1/sessions", narrow, json={"model": "dev/echo"})
    envelope_error(r, 403, "AUTH_INSUFFICIENT_SCOPE")
    r = await api.call("POST", f"/v1/sessions/{s['id']}/messages", narrow, json={"content": "x"})
    envelope_error(r, 403, "AUTH_INSUFFICIENT_SCOPE")
    # Reading needs no models:use.
    assert (await api.ok("GET", f"/v1/sessions/{s['id']}", narrow))["id"] == s["id"]
    scoped = await _key(api, alice, ["models:use"])
    await _session(api, scoped)
    r = await api.call("POST", f"/v1/sessions/{s['id']}/messages", scoped, json={"content": "x"})
    assert envelope_ok(r, 200)["content"] == "echo: x"


async def test_ownership_and_tenant_admin(api: Api) -> None:
    admin, alice, bob = await _users(api)
    s = await _session(api, alice, title="mine")
    sid = s["id"]
    for method, path, body in [
        ("GET", f"/v1/sessions/{sid}", None),
        ("PATCH", f"/v1/sessions/{sid}", {"title": "bob's now"}),
        ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/messages", {"content": "hi"}),
        ("POST", f"/v1/sessions/{sid}/stop", None),
        ("GET", f"/v1/sessions/{sid}/messages/msg_x/stream", None),
    ]:
        r = await api.call(method, path, bob, json=body)
        envelope_error(r, 404, "SESSION_NOT_FOUND")
    # The tenant admin reads and edits it, but does not talk in it.
    assert (await api.ok("GET", f"/v1/sessions/{sid}", admin))["title"] == "mine"
    edited = await api.ok("PATCH", f"/v1/sessions/{sid}", admin, json={"title": "moderated"})
    assert edited["title"] == "moderated"
    r = await api.call("POST", f"/v1/sessions/{sid}/messages", admin, json={"content": "hi"})
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")


async def test_list_own_and_tenant_scope_with_paging(api: Api) -> None:
    admin, alice, bob = await _users(api)
    mine = [(await _session(api, alice, title=f"a{i}"))["id"] for i in range(5)]
    theirs = (await _session(api, bob))["id"]
    r = await api.call("GET", "/v1/sessions?limit=2", alice)
    body = r.json()
    assert [s["id"] for s in body["data"]["items"]] == mine[::-1][:2]
    assert body["meta"]["has_more"] is True
    seen = [s["id"] for s in body["data"]["items"]]
    cursor = body["meta"]["next_cursor"]
    while cursor:
        page = (await api.call("GET", f"/v1/sessions?limit=2&cursor={cursor}", alice)).json()
        seen += [s["id"] for s in page["data"]["items"]]
        cursor = page["meta"]["next_cursor"]
        assert page["meta"]["has_more"] is (cursor is not None)
    assert seen == mine[::-1]
    r = await api.call("GET", "/v1/sessions?scope=tenant", alice)
    envelope_error(r, 403, "AUTHZ_PERMISSION_DENIED")
    everyone = await api.ok("GET", "/v1/sessions?scope=tenant&limit=100", admin)
    assert [s["id"] for s in everyone["items"]] == [theirs, *mine[::-1]]
    assert (await api.ok("GET", "/v1/sessions", admin))["items"] == []
    for query, field in [("scope=all", "scope"), ("limit=0", "limit"), ("cursor=x", "cursor")]:
        r = await api.call("GET", f"/v1/sessions?{query}", alice)
        assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith(field)


async def test_patch_fields_and_refusals(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice, title="t", system_prompt="p", metadata={"a": 1})
    sid = s["id"]
    out = await api.ok(
        "PATCH",
        f"/v1/sessions/{sid}",
        alice,
        json={"title": "new", "system_prompt": "be terse", "metadata": {"b": 2}},
    )
    assert (out["title"], out["system_prompt"], out["metadata"]) == ("new", "be terse", {"b": 2})
    cleared = await api.ok(
        "PATCH", f"/v1/sessions/{sid}", alice, json={"title": None, "system_prompt": None}
    )
    assert (cleared["title"], cleared["system_prompt"]) == (None, None)
    for body, field in [
        ({"model": "dev/echo"}, "model"),
        ({"message_count": 3}, "message_count"),
        ({"status": "archived"}, "status"),
        ({"status": None}, "status"),
        ({"title": 7}, "title"),
        ({"metadata": "x"}, "metadata"),
    ]:
        r = await api.call("PATCH", f"/v1/sessions/{sid}", alice, json=body)
        assert envelope_error(r, 422, "VALIDATION_ERROR")["message"].startswith(field)
    closed = await api.ok("PATCH", f"/v1/sessions/{sid}", alice, json={"status": "closed"})
    assert closed["status"] == "closed"
    r = await api.call("POST", f"/v1/sessions/{sid}/messages", alice, json={"content": "hi"})
    envelope_error(r, 409, "SESSION_CLOSED")
    await api.ok("PATCH", f"/v1/sessions/{sid}", alice, json={"status": "active"})
    await api.ok("POST", f"/v1/sessions/{sid}/messages", alice, json={"content": "hi"})


async def test_soft_delete_keeps_rows_for_audit(api: Api, server: Running) -> None:
    admin, alice, _ = await _users(api)
    s = await _session(api, alice)
    sid = s["id"]
    await api.ok("POST", f"/v1/sessions/{sid}/messages", alice, json={"content": "keep me"})
    r = await api.call("DELETE", f"/v1/sessions/{sid}", alice)
    assert envelope_ok(r, 200) == {"id": sid, "deleted": True}
    for who in (alice, admin):
        envelope_error(await api.call("GET", f"/v1/sessions/{sid}", who), 404, "SESSION_NOT_FOUND")
        r = await api.call("DELETE", f"/v1/sessions/{sid}", who)
        envelope_error(r, 404, "SESSION_NOT_FOUND")
    assert (await api.ok("GET", "/v1/sessions", alice))["items"] == []
    with open_db(server) as conn:
        row = conn.execute(
            "SELECT deleted_at_ms, deleted_by FROM sessions WHERE session_id = ?", (sid,)
        ).fetchone()
        assert row["deleted_at_ms"] is not None
        assert row["deleted_by"] == alice.participant_id
        count = conn.execute(
            "SELECT COUNT(*) FROM session_messages WHERE session_id = ?", (sid,)
        ).fetchone()[0]
        assert count == 2


async def test_unknown_ids_are_not_found(api: Api) -> None:
    alice = await api.register("alice")
    envelope_error(await api.call("GET", "/v1/sessions/sess_nope", alice), 404, "SESSION_NOT_FOUND")
    envelope_error(
        await api.call("GET", "/v1/sessions/%20bad%20id", alice), 404, "SESSION_NOT_FOUND"
    )
    s = await _session(api, alice)
    reply = await api.ok("POST", f"/v1/sessions/{s['id']}/messages", alice, json={"content": "q"})
    for msg in ("msg_nope", reply["user_message_id"]):
        r = await api.call("GET", f"/v1/sessions/{s['id']}/messages/{msg}/stream", alice)
        envelope_error(r, 404, "SESSION_MESSAGE_NOT_FOUND")


async def test_stop_without_a_reply_in_progress(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice)
    out = await api.ok("POST", f"/v1/sessions/{s['id']}/stop", alice)
    assert out == {"id": s["id"], "stopped": False, "message_id": None}


async def test_reattach_to_a_finished_reply_replays_it(api: Api) -> None:
    alice = await api.register("alice")
    s = await _session(api, alice)
    reply = await api.ok(
        "POST", f"/v1/sessions/{s['id']}/messages", alice, json={"content": "again"}
    )
    r = await api.call(
        "GET", f"/v1/sessions/{s['id']}/messages/{reply['message_id']}/stream", alice
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [ln[6:] for ln in r.text.split("\n\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    assert '"finish_reason":"stop"' in lines[-2]
    assert "echo: again" in r.text


def test_purge_session_cli(tmp_path: Path) -> None:
    from homeserver import cli
    from storage import migrate
    from storage import participants as pstore
    from storage import sessions as sstore

    data = tmp_path / "data"
    data.mkdir()
    conn = db.connect(data / "homeserver.db", synchronous="normal")
    migrate.migrate(conn)
    with db.atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id="p-1",
            username="u",
            display_name="u",
            participant_type="human",
            password_hash=None,
            is_admin=False,
            now_ms=1,
        )
        sstore.create_session_txn(
            conn,
            session_id="sess_x",
            tenant_id="ten_default",
            owner_id="p-1",
            model="dev/echo",
            title=None,
            system_prompt=None,
            metadata={},
            now_ms=1,
            max_per_owner=10,
        )
        sstore.add_user_message_txn(
            conn,
            session_id="sess_x",
            message_id="msg_1",
            content="hi",
            tokens=1,
            reply_id="msg_2",
            now_ms=2,
        )
    conn.close()
    assert cli.main(["admin", "purge-session", "sess_x", "--data-dir", str(data)]) == 0
    assert cli.main(["admin", "purge-session", "sess_x", "--data-dir", str(data)]) == 1
    conn = db.connect(data / "homeserver.db", readonly=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM session_messages").fetchone()[0] == 0
    finally:
        conn.close()
