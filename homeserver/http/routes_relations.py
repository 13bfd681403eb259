"""Edit, redact, react and read-marker routes (CONTRACT section 7)."""

from __future__ import annotations

from quart import Quart, Response

from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from homeserver.rooms.relations import RelationService
from protocol.events import wire_event
from protocol.validation import opt_str, req_obj, req_str


def install(
    app: Quart, auth: AuthService, relations: RelationService, *, limit: int, tenant_id: str
) -> None:
    async def caller() -> str:
        return (await auth.authenticate(bearer())).participant_id

    @route(app, "/v1/rooms/<room_id>/events/<event_id>/edit", ["POST"])
    async def edit(room_id: str, event_id: str) -> Response:
        me = await caller()
        content = req_obj(await json_body(limit), "content")
        return ok(wire_event(await relations.edit(me, room_id, event_id, content), tenant_id))

    @route(app, "/v1/rooms/<room_id>/events/<event_id>/redact", ["POST"])
    async def redact(room_id: str, event_id: str) -> Response:
        me = await caller()
        reason = opt_str(await json_body(limit), "reason", max_len=1024)
        return ok(wire_event(await relations.redact(me, room_id, event_id, reason), tenant_id))

    @route(app, "/v1/rooms/<room_id>/events/<event_id>/react", ["POST"])
    async def react(room_id: str, event_id: str) -> Response:
        me = await caller()
        emoji = req_str(await json_body(limit), "emoji", max_len=64)
        return ok(await relations.react(me, room_id, event_id, emoji, add=True))

    @route(app, "/v1/rooms/<room_id>/events/<event_id>/react/<emoji>", ["DELETE"])
    async def unreact(room_id: str, event_id: str, emoji: str) -> Response:
        me = await caller()
        return ok(await relations.react(me, room_id, event_id, emoji, add=False))

    @route(app, "/v1/rooms/<room_id>/read-marker", ["PUT"])
    async def read_marker(room_id: str) -> Response:
        me = await caller()
        event_id = req_str(await json_body(limit), "event_id", max_len=128)
        result = await relations.set_read_marker(me, room_id, event_id)
        return ok(
            {
                "room_id": room_id,
                "event_id": result.event_id,
                "unread_count": result.unread_count,
                "moved": result.moved,
            }
        )

    @route(app, "/v1/rooms/<room_id>/unread", ["GET"])
    async def unread(room_id: str) -> Response:
        count, last = await relations.unread(await caller(), room_id)
        return ok({"room_id": room_id, "unread_count": count, "last_read_event_id": last})
