"""Presence, typing, the room state snapshot and the settings it shows (seed 004)."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from homeserver.http import render
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from homeserver.live.ephemeral import PresenceService, TypingService
from homeserver.rooms.state import RoomStateService, Snapshot, engagement_json
from protocol.errors import invalid
from protocol.power import role_for
from protocol.timefmt import iso_ms, iso_or_none, parse_iso
from protocol.validation import opt_bool, opt_str, req_str
from storage.roomstate import Snooze


def _until(body: dict[str, Any], *, required: bool) -> int | None:
    raw = body.get("until")
    if raw is None:
        if required:
            raise invalid("until", "is required (an ISO-8601 timestamp)")
        return None
    if not isinstance(raw, str):
        raise invalid("until", "must be an ISO-8601 timestamp or null")
    try:
        return parse_iso(raw)
    except ValueError as exc:
        raise invalid("until", "must be an ISO-8601 timestamp") from exc


def _snooze(s: Snooze) -> dict[str, Any]:
    return {
        "id": s.snooze_id,
        "task_id": s.snooze_id,
        "event_id": s.event_id,
        "room_id": s.room_id,
        "until": iso_ms(s.until_ms),
        "created_at": iso_ms(s.created_at_ms),
    }


def _snapshot(snap: Snapshot) -> dict[str, Any]:
    members = [
        {
            "participant_id": m.participant_id,
            "membership": m.membership,
            "power_level": m.power_level,
            "role": role_for(m.power_level, m.read_only),
            "joined_at": iso_or_none(m.joined_at_ms),
            "notification_mode": m.notification_mode,
            "muted_until": iso_or_none(m.muted_until_ms),
            "presence": snap.presence.get(m.participant_id, "offline"),
            "participant": {
                "id": m.participant_id,
                "display_name": m.display_name,
                "participant_type": m.participant_type,
                "avatar_url": m.avatar_url,
            },
        }
        for m in snap.members
    ]
    return {
        "room": render.room(snap.room),
        "members": members,
        "engagement": engagement_json(snap.engagement, snap.default_mode),
        "plan": None,
        "active_sidekicks": [],
        "active_call": None,
        "unread_count": snap.unread_count,
        "last_read_event_id": snap.last_read_event_id,
        "muted_until": iso_or_none(snap.muted_until_ms),
        "snoozed_event_ids": snap.snoozed_event_ids,
    }


def install(
    app: Quart,
    auth: AuthService,
    state: RoomStateService,
    presence: PresenceService,
    typing: TypingService,
    *,
    limit: int,
) -> None:
    async def caller() -> str:
        return (await auth.authenticate(bearer())).participant_id

    @route(app, "/v1/presence", ["GET"])
    async def get_presence() -> Response:
        me = await caller()
        raw = request.args.get("ids", "")
        ids = [i for i in (p.strip() for p in raw.split(",")) if i]
        if not ids:
            raise invalid("ids", "give one or more comma-separated participant ids")
        return ok(await presence.states_for(me, list(dict.fromkeys(ids))))

    @route(app, "/v1/me/presence", ["PUT"])
    async def put_presence() -> Response:
        me = await caller()
        body = await json_body(limit)
        value = opt_str(body, "state", max_len=32) or opt_str(body, "presence", max_len=32)
        if value is None:
            raise invalid("state", "is required: online, idle, busy, appear_offline or auto")
        presence.set_manual(me, value)
        return ok({"participant_id": me, "state": presence.state_of(me)})

    @route(app, "/v1/me/heartbeat", ["POST"])
    async def heartbeat() -> Response:
        me = await caller()
        active = opt_bool(await json_body(limit), "active", default=True)
        presence.heartbeat(me, active)
        return ok({"participant_id": me, "state": presence.state_of(me)})

    @route(app, "/v1/typing", ["PUT"])
    async def put_typing() -> Response:
        me = await caller()
        body = await json_body(limit)
        room_id = req_str(body, "room_id", max_len=128)
        flag = body.get("typing")
        if not isinstance(flag, bool):
            raise invalid("typing", "must be true or false")
        await typing.request(me, room_id, flag)
        if flag:
            presence.active(me)
        return ok({})

    @route(app, "/v1/rooms/<room_id>/state", ["GET"])
    async def snapshot(room_id: str) -> Response:
        return ok(_snapshot(await state.snapshot(await caller(), room_id)))

    @route(app, "/v1/rooms/<room_id>/mute", ["PUT"])
    async def mute(room_id: str) -> Response:
        me = await caller()
        until = _until(await json_body(limit), required=False)
        await state.mute(me, room_id, until)
        return ok({"room_id": room_id, "muted_until": iso_or_none(until)})

    @route(app, "/v1/rooms/<room_id>/notification-mode", ["PUT"])
    async def notification_mode(room_id: str) -> Response:
        me = await caller()
        mode = req_str(await json_body(limit), "mode", max_len=16)
        await state.set_notification_mode(me, room_id, mode)
        return ok({"room_id": room_id, "notification_mode": mode})

    @route(app, "/v1/messages/<event_id>/snooze", ["POST"])
    async def snooze(event_id: str) -> Response:
        me = await caller()
        until = _until(await json_body(limit), required=True)
        assert until is not None
        return ok(_snooze(await state.snooze(me, event_id, until)), 201)

    @route(app, "/v1/me/snoozes", ["GET"])
    async def snoozes() -> Response:
        found = await state.snoozes(await caller())
        return ok({"items": [_snooze(s) for s in found]})

    @route(app, "/v1/me/snoozes/<snooze_id>", ["DELETE"])
    async def unsnooze(snooze_id: str) -> Response:
        await state.unsnooze(await caller(), snooze_id)
        return ok({"id": snooze_id, "deleted": True})

    @route(app, "/v1/rooms/<room_id>/ai/engagement", ["GET"])
    async def get_engagement(room_id: str) -> Response:
        view = await state.engagement(await caller(), room_id)
        return ok(engagement_json(view.rows, view.default_mode))

    for path, column in (("engagement", "mode"), ("response-mode", "response_mode")):

        @route(app, f"/v1/rooms/<room_id>/ai/{path}", ["PUT"])
        async def put_engagement(room_id: str, column: str = column) -> Response:
            me = await caller()
            body = await json_body(limit)
            mode = req_str(body, "mode", max_len=32)
            ai_id = opt_str(body, "participant_id", max_len=128)
            view = await state.set_engagement(me, room_id, column, mode, ai_id)
            return ok(engagement_json(view.rows, view.default_mode))
