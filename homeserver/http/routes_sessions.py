"""``/v1/sessions`` (CONTRACT 11), ScaiGrid route family: parse, call the service, render.

Lives in ``homeserver/http`` with the other route modules; the behaviour is in
``homeserver/sessions`` and the SSE rendering in ``homeserver/http/sse.py``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from bridges.ticks import Ticks
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.http.sse import follow_reply, sse_response
from homeserver.identity.auth import AuthService
from homeserver.sessions import Generation, SessionService
from protocol.errors import ApiError, invalid
from protocol.sessions import parse_create, parse_patch, parse_send
from protocol.timefmt import iso_ms
from protocol.validation import clamp_limit, parse_position
from storage.sessions import Session, SessionMessage

LIST_DEFAULT = 20
LIST_MAX = 100


def session_json(s: Session, generating: str | None = None) -> dict[str, Any]:
    return {
        "id": s.session_id,
        "model": s.model,
        "title": s.title,
        "system_prompt": s.system_prompt,
        "metadata": s.metadata,
        "status": s.status,
        "created_at": iso_ms(s.created_at_ms),
        "updated_at": iso_ms(s.updated_at_ms),
        "message_count": s.message_count,
        "generating_message_id": generating,
    }


def message_json(m: SessionMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": m.message_id,
        "role": m.role,
        "content": m.content,
        "created_at": iso_ms(m.created_at_ms),
    }
    if m.role == "assistant":
        body["finish_reason"] = m.finish_reason
        body["usage"] = {
            "prompt_tokens": m.prompt_tokens or 0,
            "completion_tokens": m.completion_tokens or 0,
        }
    return body


def reply_json(gen: Generation) -> dict[str, Any]:
    usage = gen.usage
    return {
        "message_id": gen.message_id,
        "user_message_id": gen.user_message_id,
        "content": gen.text,
        "finish_reason": gen.finish_reason,
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        },
    }


def _reply_headers(gen: Generation) -> dict[str, str]:
    headers = {"X-Message-Id": gen.message_id}
    if gen.user_message_id:
        headers["X-User-Message-Id"] = gen.user_message_id
    return headers


def install(app: Quart, auth: AuthService, sessions: SessionService, *, limit: int) -> None:
    heartbeat = sessions.limits.heartbeat_seconds
    ticks = Ticks()  # the SSE writers' coalescing waits share millisecond timers

    def _stream(gen: Generation) -> Response:
        body = follow_reply(gen, heartbeat=heartbeat, ticks=ticks)
        return sse_response(body, _reply_headers(gen))

    @route(app, "/v1/sessions", ["POST"], family="sg")
    async def create() -> Response:
        principal = await auth.authenticate(bearer())
        spec = parse_create(await json_body(limit, "sg"))
        return ok(session_json(await sessions.create(principal, spec)), 201)

    @route(app, "/v1/sessions", ["GET"], family="sg")
    async def list_sessions() -> Response:
        principal = await auth.authenticate(bearer())
        scope = request.args.get("scope") or "own"
        if scope not in ("own", "tenant"):
            raise invalid("scope", "must be 'tenant' (or absent)", family="sg")
        page, cursor = await sessions.list_for(
            principal,
            tenant=scope == "tenant",
            cursor=parse_position(request.args.get("cursor"), "cursor", family="sg"),
            limit=clamp_limit(
                request.args.get("limit"), default=LIST_DEFAULT, maximum=LIST_MAX, family="sg"
            ),
        )
        items = [session_json(s, s.generating_message_id) for s in page]
        return ok({"items": items}, has_more=cursor is not None, next_cursor=cursor)

    @route(app, "/v1/sessions/<session_id>", ["GET"], family="sg")
    async def get(session_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        view = await sessions.get(principal, session_id)
        body = session_json(view.session, view.session.generating_message_id)
        body["messages"] = [message_json(m) for m in view.messages or []]
        return ok(body)

    @route(app, "/v1/sessions/<session_id>", ["PATCH"], family="sg")
    async def update(session_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        changes = parse_patch(await json_body(limit, "sg"))
        updated = await sessions.update(principal, session_id, changes)
        return ok(session_json(updated, updated.generating_message_id))

    @route(app, "/v1/sessions/<session_id>", ["DELETE"], family="sg")
    async def delete(session_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        await sessions.delete(principal, session_id)
        return ok({"id": session_id, "deleted": True})

    @route(app, "/v1/sessions/<session_id>/messages", ["POST"], family="sg")
    async def send(session_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        req = parse_send(await json_body(limit, "sg"))
        gen = await sessions.send(principal, session_id, req)
        if req.stream:
            return _stream(gen)
        await gen.done.wait()  # a disconnect cancels only this wait, not the reply
        if gen.error is not None:
            raise ApiError(
                gen.error.code,
                gen.error.message,
                details={"message_id": gen.message_id, "user_message_id": gen.user_message_id},
            )
        response = ok(reply_json(gen))
        response.headers.update(_reply_headers(gen))
        return response

    @route(app, "/v1/sessions/<session_id>/messages/<msg_id>/stream", ["GET"], family="sg")
    async def reattach(session_id: str, msg_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        gen = await sessions.attach(principal, session_id, msg_id)
        return _stream(gen)

    @route(app, "/v1/sessions/<session_id>/stop", ["POST"], family="sg")
    async def stop(session_id: str) -> Response:
        principal = await auth.authenticate(bearer())
        gen = await sessions.stop(principal, session_id)
        if gen is None:
            return ok({"id": session_id, "stopped": False, "message_id": None})
        return ok(
            {
                "id": session_id,
                "stopped": True,
                "message_id": gen.message_id,
                "finish_reason": gen.finish_reason,
                "content": gen.text,
            }
        )
