"""Tenants, tenant admins and API-key scopes (CONTRACT 10); GET /v1/models."""

from __future__ import annotations

from tests.support import Api, User, envelope_error, envelope_ok


async def key(api: Api, user: User, **body: object) -> str:
    data = await api.ok("POST", "/v1/api-keys", user, status=201, json={"name": "k", **body})
    return str(data["key"])


def as_user(secret: str, name: str = "key") -> User:
    return User("?", secret, "", name)


async def test_keys_default_to_all_scopes_and_list_them(api: Api) -> None:
    alice = await api.register("alice")
    data = await api.ok("POST", "/v1/api-keys", alice, status=201, json={"name": "bot"})
    assert data["scopes"] == ["*"]
    scoped = await api.ok(
        "POST", "/v1/api-keys", alice, status=201, json={"name": "m", "scopes": ["models:use"]}
    )
    assert scoped["scopes"] == ["models:use"]
    items = (await api.ok("GET", "/v1/api-keys", alice))["items"]
    assert sorted(tuple(k["scopes"]) for k in items) == [("*",), ("models:use",)]


async def test_bad_scopes_are_refused_naming_the_field(api: Api) -> None:
    alice = await api.register("alice")
    for scopes, field in [([], "scopes"), (["Bad Scope"], "scopes[0]"), ("*", "scopes")]:
        r = await api.call("POST", "/v1/api-keys", alice, json={"name": "k", "scopes": scopes})
        err = envelope_error(r, 400, "SW_INVALID_PARAM")
        assert err["message"].startswith(field)


async def test_a_scoped_key_cannot_mint_a_wider_key(api: Api) -> None:
    alice = await api.register("alice")
    narrow = as_user(await key(api, alice, scopes=["rooms:read"]))
    r = await api.call("POST", "/v1/api-keys", narrow, json={"name": "wide"})
    envelope_error(r, 403, "AUTH_INSUFFICIENT_SCOPE")
    r = await api.call("POST", "/v1/api-keys", narrow, json={"name": "w", "scopes": ["models:use"]})
    envelope_error(r, 403, "AUTH_INSUFFICIENT_SCOPE")
    same = await api.call(
        "POST", "/v1/api-keys", narrow, json={"name": "same", "scopes": ["rooms:read"]}
    )
    assert envelope_ok(same, 201)["scopes"] == ["rooms:read"]


async def test_first_dev_registrant_is_the_tenant_admin(api: Api) -> None:
    first = await api.register("first")
    second = await api.register("second")
    me1 = await api.ok("GET", "/v1/me", first)
    me2 = await api.ok("GET", "/v1/me", second)
    assert (me1["is_admin"], me2["is_admin"]) == (True, False)
    assert me1["tenant_id"] == me2["tenant_id"] == "ten_default"


async def test_models_lists_dev_echo(api: Api) -> None:
    alice = await api.register("alice")
    items = (await api.ok("GET", "/v1/models", alice))["items"]
    assert items == [
        {
            "slug": "dev/echo",
            "id": "dev/echo",
            "display_name": "Echo (built-in dev model)",
            "modality": "text",
            "context_window": 32768,
            "max_output_tokens": 4096,
        }
    ]
    r = await api.call("GET", "/v1/models")
    envelope_error(r, 401, "AUTH_TOKEN_MISSING")
