"""Auth, profile and API-key routes (CONTRACT section 3)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from quart import Quart, Response, request

from homeserver.http import render
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from homeserver.identity.profiles import ProfileService
from protocol.errors import ApiError, ErrorCode
from protocol.timefmt import parse_iso
from protocol.validation import opt_str, parse_scopes, req_str


async def _form_or_json(max_bytes: int) -> dict[str, Any]:
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        if len(raw) > max_bytes:
            raise ApiError(ErrorCode.SW_CONTENT_TOO_LARGE, "body too large")
        try:
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise ApiError(ErrorCode.SW_BAD_JSON, "body is not UTF-8") from exc
        return {k: v[0] for k, v in parsed.items()}
    return await json_body(max_bytes)


def install(app: Quart, auth: AuthService, profiles: ProfileService, limit: int) -> None:

    @route(app, "/v1/auth/register", ["POST"])
    async def register() -> Response:
        body = await json_body(limit)
        pair = await auth.register(
            req_str(body, "username", max_len=64),
            req_str(body, "password", max_len=1024),
            opt_str(body, "display_name", max_len=255),
        )
        data = pair.to_dict()
        data.pop("token_type")
        return ok(data, 201)

    @route(app, "/v1/auth/token", ["POST"])
    async def token() -> Response:
        body = await _form_or_json(limit)
        grant = req_str(body, "grant_type", max_len=32)
        if grant == "password":
            pair = await auth.password_grant(
                req_str(body, "username", max_len=64), req_str(body, "password", max_len=1024)
            )
        elif grant == "refresh_token":
            pair = await auth.refresh_grant(req_str(body, "refresh_token", max_len=256))
        else:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM, "grant_type: must be password or refresh_token"
            )
        data = pair.to_dict()
        data.pop("participant_id")
        return ok(data)

    @route(app, "/v1/me", ["GET"])
    async def me() -> Response:
        principal = await auth.authenticate(bearer())
        found = await profiles.get(principal.participant_id)
        return ok(render.participant(found, principal.participant_id))

    @route(app, "/v1/me", ["PUT"])
    async def update_me() -> Response:
        principal = await auth.authenticate(bearer())
        body = await json_body(limit)
        changes: dict[str, str | None] = {}
        for field, max_len in (("display_name", 255), ("avatar_url", 2048), ("bio", 4096)):
            if field in body:
                changes[field] = opt_str(body, field, max_len=max_len)
        if changes.get("display_name", "x") in (None, ""):
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "display_name: cannot be empty")
        found = await profiles.update(principal.participant_id, changes)
        return ok(render.participant(found, principal.participant_id))

    @route(app, "/v1/api-keys", ["POST"])
    async def create_key() -> Response:
        principal = await auth.authenticate(bearer())
        body = await json_body(limit)
        name = req_str(body, "name", max_len=128)
        expires_raw = opt_str(body, "expires_at", max_len=64)
        expires = None
        if expires_raw:
            try:
                expires = parse_iso(expires_raw)
            except ValueError as exc:
                raise ApiError(
                    ErrorCode.SW_INVALID_PARAM, "expires_at: must be an ISO-8601 timestamp"
                ) from exc
        scopes = parse_scopes(body)
        key, secret = await auth.create_api_key(principal, name, expires, scopes)
        return ok({**render.api_key(key), "key": secret}, 201)

    @route(app, "/v1/api-keys", ["GET"])
    async def list_keys() -> Response:
        principal = await auth.authenticate(bearer())
        keys = await auth.list_api_keys(principal)
        return ok({"items": [render.api_key(k) for k in keys]})

    @route(app, "/v1/api-keys/<key_id>", ["DELETE"])
    async def delete_key(key_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        await auth.revoke_api_key(principal, key_id)
        return ok({"id": key_id, "deleted": True})
