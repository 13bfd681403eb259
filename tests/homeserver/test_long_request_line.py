"""A first request line over the router's limit is answered 400 in the envelope, not
reset (schemathesis found the reset: ``GET /v1/presence?ids=`` with 24 KB of escapes).

Only a connection's first request passes the router (homeserver.listener); later
requests on a kept-alive connection go to hypercorn directly.
"""

from __future__ import annotations

import httpx

from homeserver.app import Running
from homeserver.listener import MAX_REQUEST_LINE
from tests.support import Api, envelope_error


async def test_a_too_long_request_line_is_a_400(server: Running, api: Api) -> None:
    user = await api.register("erin")
    async with httpx.AsyncClient(base_url=server.base_url, headers=user.auth) as fresh:
        r = await fresh.get("/v1/presence", params={"ids": "\u0080" * 4000})
    error = envelope_error(r, 400, "SW_INVALID_PARAM")
    assert str(MAX_REQUEST_LINE) in error["message"]
    ok = await api.call("GET", "/v1/presence", user, params={"ids": user.participant_id})
    assert ok.status_code == 200
