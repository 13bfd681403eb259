"""Bots, tone, embed tokens and escalation rules under ``/v1/modules/scaibot/``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from quart import Blueprint, Response, request

from bridges.models.base import ChatModels, Finish
from homeserver.http.shim import bearer, json_body, ok, route
from homeserver.identity.auth import SCOPE_MODELS_USE
from homeserver.modules.scaibot.access import Callers
from homeserver.modules.scaibot.bots import BotService
from homeserver.modules.scaibot.rules import RuleService
from homeserver.modules.scaibot.views import bot_view, embed_info_view, rule_view
from protocol.errors import invalid
from protocol.scaibot import embed
from protocol.scaibot.bots import STATUSES, parse_bot_config, parse_status
from protocol.scaibot.escalation import parse_rule
from protocol.scaibot.tone import build_prompt, parse_tone, system_prompt
from protocol.timefmt import iso_ms
from protocol.validation import clamp_limit, opt_int, opt_list, opt_str, req_str

MAX_METADATA_BYTES = 4096
WidgetUrl = Callable[[], str]


def _metadata(body: dict[str, Any]) -> Any:
    value = body.get("metadata")
    if value is not None and len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise invalid(
            "metadata", f"must be at most {MAX_METADATA_BYTES} bytes of JSON", family="bot"
        )
    return value


def install(
    bp: Blueprint,
    callers: Callers,
    bots: BotService,
    rules: RuleService,
    models: ChatModels,
    *,
    limit: int,
    widget_url: WidgetUrl,
) -> None:
    operator = callers.operator

    @route(bp, "/bots", ["GET"], family="bot")
    async def list_bots() -> Response:
        me = await operator(bearer())
        status = request.args.get("status")
        if status is not None and status not in STATUSES:
            raise invalid("status", "must be one of draft, active, archived", family="bot")
        page = await bots.page(
            me,
            status,
            request.args.get("cursor"),
            clamp_limit(request.args.get("limit"), default=20, maximum=100, family="bot"),
        )
        return ok(
            {"items": [bot_view(b) for b in page.bots], "next_cursor": page.next_cursor},
            has_more=page.next_cursor is not None,
            next_cursor=page.next_cursor,
        )

    @route(bp, "/bots", ["POST"], family="bot")
    async def create_bot() -> Response:
        me = await operator(bearer())
        config = parse_bot_config(await json_body(limit, "bot"), with_status=True)
        return ok(bot_view(await bots.create(me, config)), 201)

    @route(bp, "/bots/<bot_id>", ["GET"], family="bot")
    async def get_bot(bot_id: str) -> Response:
        me = await operator(bearer())
        return ok(bot_view(await bots.get(me, bot_id)))

    @route(bp, "/bots/<bot_id>", ["PUT"], family="bot")
    async def put_bot(bot_id: str) -> Response:
        me = await operator(bearer())
        config = parse_bot_config(await json_body(limit, "bot"), with_status=False)
        return ok(bot_view(await bots.replace(me, bot_id, config)))

    @route(bp, "/bots/<bot_id>/status", ["PATCH"], family="bot")
    async def patch_status(bot_id: str) -> Response:
        me = await operator(bearer())
        status = parse_status((await json_body(limit, "bot")).get("status"))
        return ok(bot_view(await bots.set_status(me, bot_id, status)))

    @route(bp, "/bots/<bot_id>", ["DELETE"], family="bot")
    async def delete_bot(bot_id: str) -> Response:
        me = await operator(bearer())
        await bots.delete(me, bot_id)
        return Response(b"", status=204)

    # -- embed tokens ----------------------------------------------------------

    @route(bp, "/bots/<bot_id>/embed-token", ["POST"], family="bot")
    async def mint(bot_id: str) -> Response:
        me = await operator(bearer())
        body = await json_body(limit, "bot")
        ttl = opt_int(body, "ttl_seconds", lo=embed.MIN_TTL, hi=embed.MAX_TTL, family="bot")
        minted = await bots.mint(
            me,
            bot_id,
            ttl_seconds=embed.DEFAULT_TTL if ttl is None else ttl,
            visitor_id=opt_str(body, "visitor_id", max_len=128, min_len=1, family="bot"),
            visitor_email=opt_str(body, "visitor_email", max_len=254, min_len=1, family="bot"),
            visitor_name=opt_str(body, "visitor_name", max_len=200, min_len=1, family="bot"),
            metadata=_metadata(body),
        )
        return ok(
            {
                "token": minted.token,
                "expires_at": iso_ms(minted.expires_at_ms),
                "bot_id": bot_id,
                "visitor_id": minted.visitor_id,
                "widget_url": widget_url(),
            },
            201,
        )

    @route(bp, "/bots/<bot_id>/embed-token", ["DELETE"], family="bot")
    async def revoke(bot_id: str) -> Response:
        me = await operator(bearer())
        token = req_str(
            await json_body(limit, "bot"), "token", max_len=embed.MAX_TOKEN, family="bot"
        )
        await bots.revoke(me, bot_id, token)
        return ok({"revoked": True, "bot_id": bot_id})

    @route(bp, "/bots/<bot_id>/embed-info", ["GET"], family="bot")
    async def embed_info(bot_id: str) -> Response:
        return ok(embed_info_view(await bots.public_bot(bot_id), widget_url()))

    # -- tone ----------------------------------------------------------------

    @route(bp, "/bots/<bot_id>/tone", ["GET"], family="bot")
    async def get_tone(bot_id: str) -> Response:
        me = await operator(bearer())
        return ok((await bots.tone(me, bot_id)).to_dict())

    @route(bp, "/bots/<bot_id>/tone", ["PUT"], family="bot")
    async def put_tone(bot_id: str) -> Response:
        me = await operator(bearer())
        tone = parse_tone(await json_body(limit, "bot"))
        return ok((await bots.put_tone(me, bot_id, tone)).to_dict())

    @route(bp, "/bots/<bot_id>/tone/preview", ["POST"], family="bot")
    async def preview(bot_id: str) -> Response:
        me = await operator(bearer())
        me.require_scope(SCOPE_MODELS_USE)
        body = await json_body(limit, "bot")
        sample = req_str(body, "sample_message", max_len=4000, family="bot")
        bot = await bots.get_for_write(me, bot_id)
        current = await bots.tone(me, bot_id)
        tone = parse_tone(body.get("tone") or {}, base=current)
        prompt = build_prompt(system_prompt(bot.config.display_name, tone), [], [], sample)
        text, tokens = await _complete(
            models, bot.config.model, prompt, bot.config.max_tokens_per_response
        )
        return ok({"response": text, "tokens": tokens, "tone": tone.to_dict()})

    # -- escalation rules --------------------------------------------------------

    @route(bp, "/bots/<bot_id>/escalations", ["GET"], family="bot")
    async def list_rules(bot_id: str) -> Response:
        me = await operator(bearer())
        return ok({"items": [rule_view(r) for r in await rules.all_rules(me, bot_id)]})

    @route(bp, "/bots/<bot_id>/escalations", ["POST"], family="bot")
    async def create_rule(bot_id: str) -> Response:
        me = await operator(bearer())
        spec = parse_rule(await json_body(limit, "bot"))
        return ok(rule_view(await rules.create(me, bot_id, spec)), 201)

    @route(bp, "/bots/<bot_id>/escalations/reorder", ["POST"], family="bot")
    async def reorder(bot_id: str) -> Response:
        me = await operator(bearer())
        body = await json_body(limit, "bot")
        order = opt_list(body, "order", max_items=100, of=str, family="bot")
        if order is None:
            raise invalid("order", "is required", family="bot")
        return ok({"items": [rule_view(r) for r in await rules.reorder(me, bot_id, order)]})

    @route(bp, "/bots/<bot_id>/escalations/<rule_id>", ["PUT"], family="bot")
    async def put_rule(bot_id: str, rule_id: str) -> Response:
        me = await operator(bearer())
        spec = parse_rule(await json_body(limit, "bot"))
        return ok(rule_view(await rules.replace(me, bot_id, rule_id, spec)))

    @route(bp, "/bots/<bot_id>/escalations/<rule_id>", ["DELETE"], family="bot")
    async def delete_rule(bot_id: str, rule_id: str) -> Response:
        me = await operator(bearer())
        await rules.delete(me, bot_id, rule_id)
        return Response(b"", status=204)


async def _complete(
    models: ChatModels, slug: str, prompt: list[Any], max_tokens: int
) -> tuple[str, int]:
    """One non-streamed answer, assembled from the stream."""
    model = models.get(slug)
    parts: list[str] = []
    tokens = 0
    async with contextlib.aclosing(
        models.stream_chat(slug, prompt, min(max_tokens, model.max_output_tokens))
    ) as items:
        async for item in items:
            if isinstance(item, Finish):
                tokens = item.usage.total_tokens
            else:
                parts.append(item.text)
    return "".join(parts), tokens
