"""``GET /v1/sync?timeout=`` takes ASCII digits only (found by schemathesis: ``¹5`` was a 500)."""

from __future__ import annotations

from tests.support import Api, envelope_error


async def test_non_ascii_digits_are_a_400(api: Api) -> None:
    user = await api.register("dora")
    r = await api.call("GET", "/v1/sync", user, params={"timeout": "\u00b95", "since": "0"})
    error = envelope_error(r, 400, "SW_INVALID_PARAM")
    assert error["message"].startswith("timeout:")
