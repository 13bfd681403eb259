"""REST: registration, token grants, bearer auth, profile and API keys (CONTRACT 2, 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import (
    Api,
    User,
    api_for,
    envelope_error,
    envelope_ok,
    make_settings,
    start_server,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- register ------------------------------------------------------------------


async def test_register_returns_tokens(api: Api) -> None:
    r = await api.call(
        "POST",
        "/v1/auth/register",
        json={"username": "alice", "password": "password123", "display_name": "Alice A"},
    )
    data = envelope_ok(r, 201)
    assert set(data) >= {"participant_id", "access_token", "refresh_token", "expires_in"}
    assert data["participant_id"].startswith("p-")
    assert isinstance(data["access_token"], str)
    assert isinstance(data["refresh_token"], str)
    assert data["access_token"] != data["refresh_token"]
    assert data["expires_in"] == 3600
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(data["access_token"])), 200)
    assert me["participant_id"] == data["participant_id"]
    assert me["username"] == "alice"
    assert me["display_name"] == "Alice A"
    assert me["participant_type"] == "human"


async def test_registration_disabled_without_dev(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", dev=False, registration_enabled=False)
    async with start_server(settings) as running, api_for(running) as api:
        r = await api.call(
            "POST", "/v1/auth/register", json={"username": "alice", "password": "password123"}
        )
        envelope_error(r, 403, "SW_AUTH_REGISTRATION_DISABLED")


async def test_registration_enabled_explicitly_without_dev(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", dev=False, registration_enabled=True)
    async with start_server(settings) as running, api_for(running) as api:
        user = await api.register("alice")
        assert user.participant_id.startswith("p-")


async def test_register_duplicate_username(api: Api) -> None:
    await api.register("alice")
    r = await api.call(
        "POST", "/v1/auth/register", json={"username": "alice", "password": "otherpass1"}
    )
    error = envelope_error(r, 409, "SW_USERNAME_TAKEN")
    assert "username" in error["message"]
    # usernames are case-insensitive
    r = await api.call(
        "POST", "/v1/auth/register", json={"username": "ALICE", "password": "otherpass1"}
    )
    envelope_error(r, 409, "SW_USERNAME_TAKEN")


async def test_register_bad_fields_name_the_field(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"password": "password123"}, "username"),
        ({"username": "", "password": "password123"}, "username"),
        ({"username": "bad name!", "password": "password123"}, "username"),
        ({"username": "-dash", "password": "password123"}, "username"),
        ({"username": "x" * 65, "password": "password123"}, "username"),
        ({"username": 42, "password": "password123"}, "username"),
        ({"username": "bob"}, "password"),
        ({"username": "bob", "password": "short"}, "password"),
        ({"username": "bob", "password": 12345678}, "password"),
        ({"username": "bob", "password": "x" * 1025}, "password"),
        ({"username": "bob", "password": "password123", "display_name": 7}, "display_name"),
    ]
    for body, field in cases:
        r = await api.call("POST", "/v1/auth/register", json=body)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert field in error["message"], (body, error)
    # none of them registered anything
    r = await api.call(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": "bob", "password": "password123"},
    )
    envelope_error(r, 401, "SW_AUTH_INVALID_CREDENTIALS")


async def test_register_malformed_json(api: Api) -> None:
    r = await api.call(
        "POST",
        "/v1/auth/register",
        content=b'{"username": "a',
        headers={"Content-Type": "application/json"},
    )
    envelope_error(r, 400, "SW_BAD_JSON")
    r = await api.call("POST", "/v1/auth/register", json=["username", "alice"])
    envelope_error(r, 400, "SW_BAD_JSON")


# -- password grant ------------------------------------------------------------


async def test_password_grant_json(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": "alice", "password": "password123"},
    )
    data = envelope_ok(r, 200)
    assert set(data) >= {"access_token", "refresh_token", "expires_in", "token_type"}
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 3600
    assert data["access_token"] != alice.access_token
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(data["access_token"])), 200)
    assert me["participant_id"] == alice.participant_id


async def test_password_grant_form_encoded(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "password123"},
    )
    assert r.request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    data = envelope_ok(r, 200)
    assert data["token_type"] == "bearer"
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(data["access_token"])), 200)
    assert me["participant_id"] == alice.participant_id


async def test_password_grant_wrong_password_and_unknown_user(api: Api) -> None:
    await api.register("alice")
    for body in (
        {"grant_type": "password", "username": "alice", "password": "wrongpass1"},
        {"grant_type": "password", "username": "nobody", "password": "password123"},
    ):
        envelope_error(
            await api.call("POST", "/v1/auth/token", json=body), 401, "SW_AUTH_INVALID_CREDENTIALS"
        )
        envelope_error(
            await api.call("POST", "/v1/auth/token", data=body), 401, "SW_AUTH_INVALID_CREDENTIALS"
        )


async def test_token_grant_validation(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "grant_type"),
        ({"grant_type": "client_credentials"}, "grant_type"),
        ({"grant_type": "password", "password": "password123"}, "username"),
        ({"grant_type": "password", "username": "alice"}, "password"),
        ({"grant_type": "refresh_token"}, "refresh_token"),
    ]
    for body, field in cases:
        error = envelope_error(
            await api.call("POST", "/v1/auth/token", json=body), 400, "SW_INVALID_PARAM"
        )
        assert field in error["message"], (body, error)


# -- refresh grant ---------------------------------------------------------------


async def refresh(api: Api, token: str) -> httpx.Response:
    return await api.call(
        "POST", "/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": token}
    )


async def test_refresh_rotates(api: Api) -> None:
    alice = await api.register("alice")
    first = envelope_ok(await refresh(api, alice.refresh_token), 200)
    assert first["token_type"] == "bearer"
    assert first["refresh_token"] != alice.refresh_token
    assert first["access_token"] != alice.access_token
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(first["access_token"])), 200)
    assert me["participant_id"] == alice.participant_id
    # the new refresh token works once more (form-encoded this time)
    r = await api.call(
        "POST",
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    second = envelope_ok(r, 200)
    assert second["refresh_token"] not in (first["refresh_token"], alice.refresh_token)


async def test_reused_refresh_token_revokes_family(api: Api) -> None:
    alice = await api.register("alice")
    newer = envelope_ok(await refresh(api, alice.refresh_token), 200)
    # the rotated-out token no longer works ...
    envelope_error(await refresh(api, alice.refresh_token), 401, "SW_AUTH_INVALID_TOKEN")
    # ... and presenting it revoked the whole family, newest refresh token included
    envelope_error(await refresh(api, newer["refresh_token"]), 401, "SW_AUTH_INVALID_TOKEN")
    # and the family's access tokens with it
    for token in (newer["access_token"], alice.access_token):
        r = await api.call("GET", "/v1/me", headers=bearer(token))
        envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")
    # a fresh login starts a new, unaffected family
    r = await api.call(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": "alice", "password": "password123"},
    )
    fresh = envelope_ok(r, 200)
    envelope_ok(await refresh(api, fresh["refresh_token"]), 200)


async def test_refresh_with_garbage_or_access_token(api: Api) -> None:
    alice = await api.register("alice")
    for token in ("garbage", alice.access_token, "swr_" + "x" * 43):
        envelope_error(await refresh(api, token), 401, "SW_AUTH_INVALID_TOKEN")
    # the failed attempts did not hurt the real refresh token
    envelope_ok(await refresh(api, alice.refresh_token), 200)


# -- bearer authentication ----------------------------------------------------


async def test_missing_and_garbage_bearer(api: Api) -> None:
    await api.register("alice")
    header_cases: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQxMjM="},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer swa_" + "A" * 43},
        {"Authorization": "Bearer swk_" + "A" * 43},
        {"Authorization": "Bearer swr_" + "A" * 43},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer a b c"},
    ]
    for headers in header_cases:
        for path in ("/v1/me", "/v1/rooms", "/v1/api-keys"):
            r = await api.call("GET", path, headers=headers)
            envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")


async def test_non_ascii_bearer_is_401(api: Api) -> None:
    for raw in (b"Bearer caf\xc3\xa9", b"Bearer \xff\xfe\x80"):
        r = await api.call("GET", "/v1/me", headers={"Authorization": raw})
        envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")


async def test_refresh_token_is_not_a_bearer(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call("GET", "/v1/me", headers=bearer(alice.refresh_token))
    envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")


async def test_scaigrid_route_auth_codes(api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    r = await api.call("GET", f"/v1/rooms/{room}/members")
    envelope_error(r, 401, "AUTH_TOKEN_MISSING")
    r = await api.call("GET", f"/v1/rooms/{room}/members", headers=bearer("garbage"))
    envelope_error(r, 401, "AUTH_TOKEN_INVALID")
    r = await api.call("POST", f"/v1/rooms/{room}/messages", json={"content": "hi"})
    envelope_error(r, 401, "AUTH_TOKEN_MISSING")


# -- profile -------------------------------------------------------------------


async def test_get_and_put_me(api: Api) -> None:
    alice = await api.register("alice")
    me = await api.ok("GET", "/v1/me", alice)
    assert me["participant_id"] == alice.participant_id
    assert me["id"] == alice.participant_id
    assert me["username"] == "alice"
    assert me["display_name"] == "alice"
    # CONTRACT 10: in --dev the first participant registered becomes the tenant admin.
    assert me["is_admin"] is True
    assert me["tenant_id"] == "ten_default"
    bob = await api.register("bob")
    assert (await api.ok("GET", "/v1/me", bob))["is_admin"] is False
    assert me["created_at"].endswith("Z")
    updated = await api.ok(
        "PUT",
        "/v1/me",
        alice,
        json={"display_name": "Alice L", "bio": "hello there", "avatar_url": "https://x/a.png"},
    )
    assert updated["display_name"] == "Alice L"
    assert updated["bio"] == "hello there"
    assert updated["avatar_url"] == "https://x/a.png"
    again = await api.ok("GET", "/v1/me", alice)
    assert again == updated
    # partial update keeps the other fields
    partial = await api.ok("PUT", "/v1/me", alice, json={"bio": "changed"})
    assert partial["display_name"] == "Alice L"
    assert partial["bio"] == "changed"
    # null clears an optional field
    cleared = await api.ok("PUT", "/v1/me", alice, json={"avatar_url": None})
    assert cleared["avatar_url"] is None


async def test_put_me_validation(api: Api) -> None:
    alice = await api.register("alice")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"display_name": ""}, "display_name"),
        ({"display_name": None}, "display_name"),
        ({"display_name": 5}, "display_name"),
        ({"display_name": "x" * 256}, "display_name"),
        ({"bio": ["a"]}, "bio"),
        ({"avatar_url": "x" * 2049}, "avatar_url"),
    ]
    for body, field in cases:
        r = await api.call("PUT", "/v1/me", alice, json=body)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert field in error["message"], (body, error)
    me = await api.ok("GET", "/v1/me", alice)
    assert me["display_name"] == "alice"


# -- API keys ------------------------------------------------------------------


async def create_key(api: Api, user: User, name: str = "bot key", **extra: Any) -> Any:
    return await api.ok("POST", "/v1/api-keys", user, status=201, json={"name": name, **extra})


async def test_api_key_lifecycle(api: Api) -> None:
    alice = await api.register("alice")
    created = await create_key(api, alice, "deploy")
    secret = created["key"]
    assert secret.startswith("swk_")
    assert len(secret) >= 4 + 32
    assert created["name"] == "deploy"
    assert created["id"]
    assert created["expires_at"] is None
    assert secret[4:] not in created["id"]

    # the key acts as its owner
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(secret)), 200)
    assert me["participant_id"] == alice.participant_id

    # listing never shows the secret
    r = await api.call("GET", "/v1/api-keys", alice)
    listed = envelope_ok(r, 200)
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0]
    assert secret not in r.text
    assert secret[4:] not in r.text
    assert secret[4:20] not in r.text

    # delete: the key stops working and leaves the list
    deleted = await api.ok("DELETE", f"/v1/api-keys/{created['id']}", alice)
    assert deleted["deleted"] is True
    envelope_error(
        await api.call("GET", "/v1/me", headers=bearer(secret)), 401, "SW_AUTH_INVALID_TOKEN"
    )
    assert (await api.ok("GET", "/v1/api-keys", alice))["items"] == []
    # deleting again is 404
    r = await api.call("DELETE", f"/v1/api-keys/{created['id']}", alice)
    envelope_error(r, 404, "SW_API_KEY_NOT_FOUND")


async def test_api_key_can_manage_keys_and_rooms(api: Api) -> None:
    alice = await api.register("alice")
    secret = (await create_key(api, alice))["key"]
    r = await api.call("POST", "/v1/rooms", headers=bearer(secret), json={"name": "via key"})
    room = envelope_ok(r, 201)
    assert room["creator_id"] == alice.participant_id
    listed = await api.ok("GET", "/v1/rooms", alice)
    assert [x["id"] for x in listed["items"]] == [room["id"]]


async def test_delete_unknown_or_foreign_key(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    envelope_error(
        await api.call("DELETE", "/v1/api-keys/key_nope", alice), 404, "SW_API_KEY_NOT_FOUND"
    )
    bobs = await create_key(api, bob)
    # alice cannot delete (or even see) bob's key
    envelope_error(
        await api.call("DELETE", f"/v1/api-keys/{bobs['id']}", alice), 404, "SW_API_KEY_NOT_FOUND"
    )
    assert (await api.ok("GET", "/v1/api-keys", alice))["items"] == []
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(bobs["key"])), 200)
    assert me["participant_id"] == bob.participant_id


async def test_api_key_validation(api: Api) -> None:
    alice = await api.register("alice")
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"name": "k", "expires_at": "not a date"}, "expires_at"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00.000Z"}, "expires_at"),
        ({"name": "k", "expires_at": 12345}, "expires_at"),
    ]
    for body, field in cases:
        r = await api.call("POST", "/v1/api-keys", alice, json=body)
        error = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert field in error["message"], (body, error)
    assert (await api.ok("GET", "/v1/api-keys", alice))["items"] == []


async def test_api_key_with_future_expiry(api: Api) -> None:
    alice = await api.register("alice")
    created = await create_key(api, alice, expires_at="2999-01-01T00:00:00.000Z")
    assert created["expires_at"].startswith("2999-01-01T00:00:00")
    me = envelope_ok(await api.call("GET", "/v1/me", headers=bearer(created["key"])), 200)
    assert me["participant_id"] == alice.participant_id


async def test_api_keys_need_auth(api: Api) -> None:
    envelope_error(await api.call("GET", "/v1/api-keys"), 401, "SW_AUTH_INVALID_TOKEN")
    envelope_error(
        await api.call("POST", "/v1/api-keys", json={"name": "x"}), 401, "SW_AUTH_INVALID_TOKEN"
    )
    envelope_error(await api.call("DELETE", "/v1/api-keys/key_x"), 401, "SW_AUTH_INVALID_TOKEN")
