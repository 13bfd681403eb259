"""``POST /chat`` (Server-Sent Events), conversations and the hand-off queue."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.http.sse import sse_response
from homeserver.modules.scaibot.access import Callers, Visitor
from homeserver.modules.scaibot.chat import ChatService
from homeserver.modules.scaibot.conversations import ConversationService
from homeserver.modules.scaibot.turn import ChatRequest
from homeserver.modules.scaibot.views import (
    conversation_view,
    escalation_view,
    handoff_view,
    message_view,
)
from protocol.errors import invalid
from protocol.timefmt import parse_iso
from protocol.validation import clamp_limit, opt_str, req_str
from storage.scaibot.conversations import ConversationFilter

MAX_MESSAGE = 4000
CONVERSATION_STATUSES = ("active", "closed", "escalated")


def parse_flag(name: str, value: str | None) -> bool:
    raw = (value or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise invalid(name, "must be true or false", family="bot")
    return raw in ("true", "1")


def chat_request(body: dict[str, Any], include_system_prompt: str | None) -> ChatRequest:
    """The ``POST /chat`` request, validated (for both transports: Quart and the listener's
    fast path); ``include_system_prompt`` is the query parameter's first value."""
    return ChatRequest(
        bot_id=req_str(body, "bot_id", max_len=128, family="bot"),
        conversation_id=opt_str(body, "conversation_id", max_len=128, min_len=1, family="bot"),
        message=req_str(body, "message", max_len=MAX_MESSAGE, family="bot"),
        include_system_prompt=parse_flag("include_system_prompt", include_system_prompt),
    )


def _choice(name: str, choices: tuple[str, ...]) -> str | None:
    value = request.args.get(name)
    if value is not None and value not in choices:
        raise invalid(name, f"must be one of {', '.join(choices)}", family="bot")
    return value


def _since() -> int | None:
    raw = request.args.get("since")
    if raw is None:
        return None
    try:
        return parse_iso(raw[:64])
    except ValueError:
        raise invalid("since", "must be an ISO 8601 timestamp", family="bot") from None


def install(
    bp: Blueprint,
    callers: Callers,
    chat: ChatService,
    conversations: ConversationService,
    *,
    limit: int,
) -> None:
    @route(bp, "/chat", ["POST"], family="bot")
    async def post_chat() -> Response:
        who = await callers.chat_caller(bearer())
        body = await json_body(limit, "bot")
        flag = request.args.get("include_system_prompt")
        turn = await chat.open_turn(who, chat_request(body, flag))
        return sse_response(chat.stream(turn), {})

    @route(bp, "/conversations", ["GET"], family="bot")
    async def list_conversations() -> Response:
        caller = await callers.caller(bearer())
        f = ConversationFilter(
            tenant_id="",
            bot_id=request.args.get("bot_id"),
            visitor_id=request.args.get("visitor_id"),
            status=_choice("status", CONVERSATION_STATUSES),
            since_ms=_since(),
            limit=clamp_limit(request.args.get("limit"), default=20, maximum=100, family="bot"),
        )
        page = await conversations.list(caller, f, request.args.get("cursor"))
        return ok(
            {"items": [conversation_view(c) for c in page.items], "next_cursor": page.next_cursor},
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
        )

    @route(bp, "/conversations/<conversation_id>", ["GET"], family="bot")
    async def transcript(conversation_id: str) -> Response:
        caller = await callers.caller(bearer())
        found = await conversations.transcript(caller, conversation_id)
        internals = not isinstance(caller, Visitor)
        return ok(
            {
                **conversation_view(found.conversation),
                "messages": [message_view(m, internals=internals) for m in found.messages],
                "escalations": [escalation_view(e, internals=internals) for e in found.escalations],
            }
        )

    @route(bp, "/conversations/<conversation_id>/status", ["PATCH"], family="bot")
    async def set_status(conversation_id: str) -> Response:
        me = await callers.operator(bearer())
        status = (await json_body(limit, "bot")).get("status")
        if status not in ("closed", "active"):
            raise invalid("status", "must be closed or active", family="bot")
        await conversations.set_status(me, conversation_id, str(status))
        found = await conversations.transcript(me, conversation_id)
        return ok(conversation_view(found.conversation))

    @route(bp, "/conversations/<conversation_id>/messages", ["POST"], family="bot")
    async def operator_message(conversation_id: str) -> Response:
        me = await callers.operator(bearer())
        content = req_str(
            await json_body(limit, "bot"), "content", max_len=MAX_MESSAGE, family="bot"
        )
        message = await conversations.operator_message(me, conversation_id, content)
        return ok(message_view(message, internals=True), 201)

    @route(bp, "/handoffs", ["GET"], family="bot")
    async def handoffs() -> Response:
        me = await callers.operator(bearer())
        page = await conversations.handoffs(
            me,
            _choice("status", ("open", "answered")),
            request.args.get("bot_id"),
            request.args.get("cursor"),
            clamp_limit(request.args.get("limit"), default=20, maximum=100, family="bot"),
        )
        return ok(
            {"items": [handoff_view(e, c) for e, c in page.items], "next_cursor": page.next_cursor},
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
        )
