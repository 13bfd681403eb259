"""``GET /v1/models`` (CONTRACT 10)."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from bridges.models import ModelRegistry
from conf.sections import ModelEntry
from homeserver.http.shim import bearer, ok, route
from homeserver.identity.auth import AuthService


def model_entry(m: ModelEntry) -> dict[str, Any]:
    return {
        "slug": m.slug,
        "id": m.slug,
        "display_name": m.display_name,
        "modality": m.modality,
        "context_window": m.context_window,
        "max_output_tokens": m.max_output_tokens,
    }


def install(app: Quart, auth: AuthService, models: ModelRegistry) -> None:
    @route(app, "/v1/models", ["GET"], family="sg")
    async def list_models() -> Response:
        await auth.authenticate(bearer())
        return ok({"items": [model_entry(m) for m in models.models()]})
