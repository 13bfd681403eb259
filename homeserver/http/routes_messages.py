"""Sending, history and sync routes (CONTRACT sections 5 and 7)."""

from __future__ import annotations

from quart import Quart, Response, request

from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from homeserver.rooms.messages import MessageService, SendRequest
from protocol.errors import ApiError, ErrorCode
from protocol.events import wire_event
from protocol.validation import (
    clamp_limit,
    normalise_mentions,
    opt_list,
    opt_str,
    parse_direction,
    parse_position,
    parse_timeout_ms,
    req_obj,
    req_str,
    text_content,
)

MAX_TEXT = 60_000


def install(
    app: Quart,
    auth: AuthService,
    messages: MessageService,
    *,
    limit: int,
    tenant_id: str,
    history_default: int,
    history_max: int,
    sync_default: int,
    sync_max: int,
    sync_timeout_default: int,
    sync_timeout_max: int,
) -> None:
    @route(app, "/v1/rooms/<room_id>/send", ["POST"])
    async def send(room_id: str) -> Response:
        me = (await auth.authenticate(bearer())).participant_id
        body = await json_body(limit)
        event = await messages.send(
            SendRequest(
                caller=me,
                room_id=room_id,
                content=req_obj(body, "content"),
                event_uuid=opt_str(body, "event_uuid", max_len=255),
                as_participant_id=opt_str(body, "as_participant_id", max_len=128),
            )
        )
        return ok(wire_event(event, tenant_id))

    @route(app, "/v1/rooms/<room_id>/messages", ["GET"])
    async def history(room_id: str) -> Response:
        me = (await auth.authenticate(bearer())).participant_id
        page = await messages.history(
            me,
            room_id,
            from_pos=parse_position(request.args.get("from")),
            direction=parse_direction(request.args.get("direction") or request.args.get("dir")),
            limit=clamp_limit(
                request.args.get("limit"), default=history_default, maximum=history_max
            ),
        )
        return ok(
            {"items": [wire_event(e, tenant_id) for e in page.events]},
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    async def scaigrid_send(room_id: str, reply_to: str | None) -> Response:
        me = (await auth.authenticate(bearer())).participant_id
        body = await json_body(limit, "sg")
        text = req_str(body, "content", max_len=MAX_TEXT, family="sg")
        content = normalise_mentions(text_content(text), body.get("mention"), family="sg")
        attachments = opt_list(body, "attachments", max_items=50, family="sg")
        if attachments:
            content["attachments"] = attachments
        if reply_to is not None:
            content["reply_to_event_id"] = reply_to
        try:
            event = await messages.send(
                SendRequest(
                    caller=me,
                    room_id=room_id,
                    content=content,
                    event_uuid=opt_str(body, "event_uuid", max_len=255, family="sg"),
                    reply_to=reply_to,
                )
            )
        except ApiError as exc:
            if exc.code is ErrorCode.SW_EVENT_NOT_FOUND:
                raise ApiError(ErrorCode.ROOM_NOT_FOUND, "no such message in this room") from exc
            raise
        return ok(wire_event(event, tenant_id), 201)

    @route(app, "/v1/rooms/<room_id>/messages", ["POST"], family="sg")
    async def post_message(room_id: str) -> Response:
        return await scaigrid_send(room_id, None)

    @route(app, "/v1/rooms/<room_id>/messages/<msg_id>/reply", ["POST"], family="sg")
    async def reply(room_id: str, msg_id: str) -> Response:
        return await scaigrid_send(room_id, msg_id)

    @route(app, "/v1/sync", ["GET"])
    async def sync() -> Response:
        principal = await auth.authenticate(bearer())
        since = parse_position(request.args.get("since"), "since") or 0
        n = clamp_limit(request.args.get("limit"), default=sync_default, maximum=sync_max)
        timeout = parse_timeout_ms(
            request.args.get("timeout"), default=sync_timeout_default, maximum=sync_timeout_max
        )
        page = await messages.sync(
            principal.participant_id, since=since, limit=n, timeout_ms=timeout
        )
        if timeout and page.events:
            # A long-poll may have waited a while: a credential revoked (or
            # expired) meanwhile gets a 401, not the events.
            await auth.check_credential(principal)
        return ok(
            {
                "events": [wire_event(e, tenant_id) for e in page.events],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            },
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
