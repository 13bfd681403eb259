"""Room, lifecycle and member routes (CONTRACT section 6)."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from homeserver.http import render
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import AuthService
from homeserver.identity.profiles import ProfileService
from homeserver.rooms.messages import MessageService
from homeserver.rooms.service import MAX_NAME, MAX_TOPIC, NewMember, RoomService, RoomSpec
from protocol.errors import Family, invalid
from protocol.events import wire_event
from protocol.ids import looks_like_id
from protocol.validation import (
    clamp_limit,
    opt_bool,
    opt_list,
    opt_str,
    req_bool,
    req_int,
    req_str,
)

RECENT_MESSAGES = 20


def _pid(body: dict[str, Any], field: str, family: Family = "sw") -> str:
    value = req_str(body, field, max_len=128, family=family)
    if not looks_like_id(value):
        raise invalid(field, "is not a participant id", family=family)
    return value


def _initial_members(body: dict[str, Any]) -> tuple[NewMember, ...]:
    raw = opt_list(body, "initial_members", max_items=1000) or []
    members = []
    for index, item in enumerate(raw):
        field = f"initial_members[{index}]"
        if not isinstance(item, dict):
            raise invalid(field, "must be an object {type, id}")
        members.append(NewMember(_pid(item, "id"), opt_str(item, "role", max_len=16) or "member"))
    return tuple(members)


def _room_spec(body: dict[str, Any]) -> RoomSpec:
    topic = opt_str(body, "topic", max_len=MAX_TOPIC)
    if topic is None:
        topic = opt_str(body, "description", max_len=MAX_TOPIC)
    room_type = opt_str(body, "room_type", max_len=32) or "group"
    is_public = opt_bool(body, "is_public", default=room_type == "public")
    return RoomSpec(
        room_type=room_type,
        name=opt_str(body, "name", max_len=MAX_NAME),
        topic=topic,
        is_public=bool(is_public),
        members=_initial_members(body),
    )


def install(
    app: Quart,
    auth: AuthService,
    rooms: RoomService,
    messages: MessageService,
    profiles: ProfileService,
    *,
    limit: int,
    tenant_id: str,
    max_page: int,
) -> None:
    async def caller() -> str:
        return (await auth.authenticate(bearer())).participant_id

    async def members_json(ms: list[Any]) -> list[dict[str, Any]]:
        people = await profiles.many([m.participant_id for m in ms])
        return [render.member(m, people.get(m.participant_id)) for m in ms]

    @route(app, "/v1/rooms", ["POST"])
    async def create_room() -> Response:
        me = await caller()
        spec = _room_spec(await json_body(limit))
        room = await rooms.create(me, spec)
        return ok(render.room(room), 201)

    @route(app, "/v1/rooms", ["GET"])
    async def my_rooms() -> Response:
        me = await caller()
        n = clamp_limit(request.args.get("limit"), default=50, maximum=max_page)
        after = request.args.get("cursor")
        found = await rooms.mine(me, limit=n + 1, after=after)
        items = [render.room(r) for r in found[:n]]
        more = len(found) > n
        return ok(
            {"items": items}, has_more=more, next_cursor=items[-1]["id"] if more and items else None
        )

    @route(app, "/v1/directory/rooms", ["GET"])
    async def directory() -> Response:
        await caller()
        n = clamp_limit(request.args.get("limit"), default=50, maximum=max_page)
        q = request.args.get("q")
        found = await rooms.directory(
            query=q[:128] if q else None, limit=n + 1, after=request.args.get("cursor")
        )
        items = [render.room(r) for r in found[:n]]
        more = len(found) > n
        return ok(
            {"items": items}, has_more=more, next_cursor=items[-1]["id"] if more and items else None
        )

    @route(app, "/v1/rooms/dm", ["POST"])
    async def direct() -> Response:
        me = await caller()
        other = _pid(await json_body(limit), "participant_id")
        room, created = await rooms.direct(me, other)
        return ok(render.room(room), 201 if created else 200)

    @route(app, "/v1/rooms/<room_id>", ["GET"])
    async def get_room(room_id: str) -> Response:
        me = await caller()
        room, ms = await rooms.get(me, room_id)
        recent = await messages.recent(me, room_id, RECENT_MESSAGES)
        return ok(
            {
                **render.room(room),
                "members": await members_json(ms),
                "recent_messages": [wire_event(e, tenant_id) for e in recent],
            }
        )

    @route(app, "/v1/rooms/<room_id>", ["PATCH"])
    async def patch_room(room_id: str) -> Response:
        me = await caller()
        body = await json_body(limit)
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = opt_str(body, "name", max_len=MAX_NAME)
        for key in ("topic", "description"):
            if key in body:
                changes["topic"] = opt_str(body, key, max_len=MAX_TOPIC)
        if "is_public" in body:
            # NOT NULL in storage: null is refused, never passed on as None.
            changes["is_public"] = req_bool(body, "is_public")
        return ok(render.room(await rooms.update(me, room_id, changes)))

    @route(app, "/v1/rooms/<room_id>", ["DELETE"])
    async def archive_room(room_id: str) -> Response:
        return ok(render.room(await rooms.set_state(await caller(), room_id, "archived")))

    for action in ("close", "archive"):
        state = "closed" if action == "close" else "archived"

        @route(app, f"/v1/rooms/<room_id>/{action}", ["POST"])
        async def freeze(room_id: str, state: str = state) -> Response:
            return ok(render.room(await rooms.set_state(await caller(), room_id, state)))

    for key, max_len in (("name", MAX_NAME), ("topic", MAX_TOPIC)):

        @route(app, f"/v1/rooms/<room_id>/{key}", ["PUT"])
        async def put_field(room_id: str, key: str = key, max_len: int = max_len) -> Response:
            me = await caller()
            body = await json_body(limit)
            if key not in body:
                raise invalid(key, "is required (null clears it)")
            value = opt_str(body, key, max_len=max_len)
            return ok(render.room(await rooms.update(me, room_id, {key: value})))

    @route(app, "/v1/rooms/<room_id>/join", ["POST"])
    async def join(room_id: str) -> Response:
        await rooms.join(await caller(), room_id)
        return ok({"room_id": room_id, "membership": "join"})

    @route(app, "/v1/rooms/<room_id>/leave", ["POST"])
    async def leave(room_id: str) -> Response:
        await rooms.leave(await caller(), room_id)
        return ok({"room_id": room_id, "membership": "leave"})

    @route(app, "/v1/rooms/<room_id>/invite", ["POST"])
    async def invite(room_id: str) -> Response:
        me = await caller()
        target = _pid(await json_body(limit), "participant_id")
        await rooms.invite(me, room_id, target)
        return ok({"room_id": room_id, "participant_id": target, "membership": "invite"})

    for action in ("kick", "ban"):

        @route(app, f"/v1/rooms/<room_id>/{action}", ["POST"])
        async def remove(room_id: str, action: str = action) -> Response:
            me = await caller()
            body = await json_body(limit)
            target = _pid(body, "participant_id")
            reason = opt_str(body, "reason", max_len=1024)
            fn = rooms.kick if action == "kick" else rooms.ban
            await fn(me, room_id, target, reason)
            membership = "leave" if action == "kick" else "ban"
            return ok({"room_id": room_id, "participant_id": target, "membership": membership})

    @route(app, "/v1/rooms/<room_id>/unban", ["POST"])
    async def unban(room_id: str) -> Response:
        me = await caller()
        target = _pid(await json_body(limit), "participant_id")
        await rooms.unban(me, room_id, target)
        return ok({"room_id": room_id, "participant_id": target, "membership": "leave"})

    # -- ScaiGrid members (ScaiGrid codes) ------------------------------------

    @route(app, "/v1/rooms/<room_id>/members", ["GET"], family="sg")
    async def list_members(room_id: str) -> Response:
        ms = await rooms.members(await caller(), room_id)
        return ok({"items": await members_json(ms)}, total=len(ms))

    @route(app, "/v1/rooms/<room_id>/members", ["POST"], family="sg")
    async def add_member(room_id: str) -> Response:
        me = await caller()
        body = await json_body(limit, "sg")
        target = _pid(body, "id", "sg")
        role = opt_str(body, "role", max_len=16, family="sg") or "member"
        if role not in ("owner", "member", "viewer"):
            raise invalid("role", "must be one of owner, member, viewer", family="sg")
        m = await rooms.add_member(me, room_id, target, role)
        return ok((await members_json([m]))[0], 201)

    @route(app, "/v1/rooms/<room_id>/members/<member_id>", ["DELETE"], family="sg")
    async def remove_member(room_id: str, member_id: str) -> Response:
        await rooms.kick(await caller(), room_id, member_id, None)
        return ok(
            {
                "room_id": room_id,
                "participant_id": member_id,
                "removed": True,
            }
        )

    @route(app, "/v1/rooms/<room_id>/members/<member_id>/power", ["PUT"])
    async def set_power(room_id: str, member_id: str) -> Response:
        me = await caller()
        level = req_int(await json_body(limit), "power_level", lo=0, hi=100)
        m = await rooms.set_power(me, room_id, member_id, level)
        return ok((await members_json([m]))[0])
