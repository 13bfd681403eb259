"""AI participants and their control in rooms (CONTRACT 12)."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from homeserver.ai import AiParticipantService, AiRunner, NewAi
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from protocol.errors import invalid
from protocol.ids import looks_like_id
from protocol.timefmt import iso_ms
from protocol.validation import clamp_limit, opt_str, parse_json_body, req_str
from storage.ai import AiParticipant

MAX_NAME = 64
MAX_PROMPT = 32_768


def ai_json(ai: AiParticipant) -> dict[str, Any]:
    return {
        "id": ai.participant_id,
        "participant_id": ai.participant_id,
        "name": ai.name,
        "display_name": ai.display_name,
        "type": ai.participant_type,
        "model": ai.model,
        "system_prompt": ai.system_prompt,
        "engagement": ai.engagement or "mention",
        "tenant_id": ai.tenant_id,
        "created_by": ai.created_by,
        "created_at": iso_ms(ai.created_at_ms),
        "presence": "online",
    }


def _opt_pid(body: dict[str, Any], field: str) -> str | None:
    value = opt_str(body, field, max_len=128)
    if value is not None and not looks_like_id(value):
        raise invalid(field, "is not a participant id")
    return value


def install(
    app: Quart,
    auth: AuthService,
    participants: AiParticipantService,
    runner: AiRunner,
    *,
    limit: int,
    max_page: int,
) -> None:
    @route(app, "/v1/ai/participants", ["POST"])
    async def create() -> Response:
        principal = await auth.authenticate(bearer())
        body = await json_body(limit)
        spec = NewAi(
            name=req_str(body, "name", max_len=MAX_NAME),
            display_name=opt_str(body, "display_name", max_len=255, min_len=1),
            kind=req_str(body, "type", max_len=16),
            model=req_str(body, "model", max_len=128),
            system_prompt=opt_str(body, "system_prompt", max_len=MAX_PROMPT) or "",
            engagement=opt_str(body, "engagement", max_len=16),
        )
        return ok(ai_json(await participants.create(principal, spec)), 201)

    @route(app, "/v1/ai/participants", ["GET"])
    async def list_ai() -> Response:
        principal = await auth.authenticate(bearer())
        n = clamp_limit(request.args.get("limit"), default=50, maximum=max_page)
        found = await participants.list(principal, limit=n + 1, after=request.args.get("cursor"))
        items = [ai_json(a) for a in found[:n]]
        more = len(found) > n
        return ok(
            {"items": items}, has_more=more, next_cursor=items[-1]["id"] if more and items else None
        )

    @route(app, "/v1/ai/participants/<ai_id>", ["GET"])
    async def get_ai(ai_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        return ok(ai_json(await participants.get(principal, ai_id)))

    @route(app, "/v1/ai/participants/<ai_id>", ["DELETE"])
    async def delete_ai(ai_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        await participants.delete(principal, ai_id)
        return ok({"id": ai_id, "deleted": True})

    @route(app, "/v1/rooms/<room_id>/ai/stop", ["POST"])
    async def stop(room_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        body = parse_json_body(raw, max_bytes=limit) if raw.strip() else {}
        stopped = await runner.stop(principal, room_id, _opt_pid(body, "participant_id"))
        return ok({"room_id": room_id, "stopped": stopped})

    @route(app, "/v1/rooms/<room_id>/ai/engage", ["POST"])
    async def engage(room_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        body = await json_body(limit)
        ai_id = req_str(body, "participant_id", max_len=128)
        draft = await runner.engage(principal, room_id, ai_id)
        return ok(
            {
                "room_id": room_id,
                "participant_id": ai_id,
                "draft_id": draft.draft_id,
                "reply_to_event_id": draft.trigger_event_id,
                "status": "thinking",
            },
            202,
        )
