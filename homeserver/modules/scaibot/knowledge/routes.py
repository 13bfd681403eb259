"""Knowledge routes (seed 002 "Knowledge", CONTRACT 13), family ``bot``:

- ``GET  {prefix}/bots/{bot_id}/documents?limit=&cursor=`` -> ``{items}`` (+ ``meta.has_more``,
  ``meta.next_cursor``); any participant of the bot's tenant.
- ``POST {prefix}/bots/{bot_id}/documents`` (multipart ``file``, ``name``) -> 201 document,
  status ``uploaded``; indexing runs in the background. The bot's creator or a tenant admin.
- ``GET  {prefix}/bots/{bot_id}/documents/{doc_id}`` -> the document.
- ``PUT  {prefix}/bots/{bot_id}/documents/{doc_id}`` (same form) -> the document, re-indexing.
- ``DELETE {prefix}/bots/{bot_id}/documents/{doc_id}`` -> ``{id, deleted: true}``.

Refusals: 404 ``BOT_NOT_FOUND`` (the directory's), 404 ``DOCUMENT_NOT_FOUND``, 415
``DOCUMENT_UNSUPPORTED``, 413 ``DOCUMENT_TOO_LARGE`` (from Content-Length before any
byte is read, else while streaming), 422 ``VALIDATION_ERROR`` naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge

from homeserver.http.shim import bearer, ok, route
from homeserver.http.upload_body import allow_large_bodies_matching
from homeserver.identity.auth import AuthService, Principal
from homeserver.media.uploads import bad_upload
from homeserver.modules.scaibot.knowledge.service import KnowledgeService
from homeserver.modules.scaibot.knowledge.upload import document_too_large
from homeserver.modules.scaibot.ports import BotDirectory, BotRef
from protocol.errors import invalid
from protocol.knowledge_text import MIME_OF
from protocol.media import multipart_boundary
from protocol.timefmt import iso_ms, iso_or_none
from storage.knowledge import Document

PREFIX = "/v1/modules/scaibot"
_SEGMENT = r"[^/]+"


def document_json(doc: Document, bot_id: str) -> dict[str, Any]:
    return {
        "id": doc.document_id,
        "document_id": doc.document_id,
        "bot_id": bot_id,
        "collection_id": doc.collection_id,
        "name": doc.name,
        "filename": doc.filename,
        "type": doc.doc_type,
        "mime_type": MIME_OF[doc.doc_type],
        "size": doc.size,
        "sha256": doc.sha256,
        "status": doc.status,
        "error": doc.error,
        "chunk_count": doc.chunk_count,
        "created_at": iso_ms(doc.created_at_ms),
        "updated_at": iso_ms(doc.updated_at_ms),
        "indexed_at": iso_or_none(doc.indexed_at_ms),
    }


def _page_args() -> tuple[int, int]:
    raw_limit = request.args.get("limit", "20")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 100:
        raise invalid("limit", "must be an integer from 1 to 100", family="bot")
    raw_cursor = request.args.get("cursor", "")
    if not raw_cursor:
        return int(raw_limit), 0
    digits = raw_cursor[1:]
    if raw_cursor[:1] != "d" or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise invalid("cursor", "is not a cursor this list returned", family="bot")
    return int(raw_limit), int(digits)


def install(
    target: Any,
    auth: AuthService,
    bots: BotDirectory,
    knowledge: KnowledgeService,
    *,
    app: QuartTrio | None = None,
    mount: str = PREFIX,
) -> None:
    """Add the routes to ``target`` (the app, or a blueprint mounted at ``PREFIX`` with
    ``mount=""``); ``app`` (default ``target``) gets the streamed-body limit."""
    quart_app = app if app is not None else target
    full = re.escape(PREFIX) + "/bots/" + _SEGMENT + "/documents"
    for method, pattern in (("POST", full), ("PUT", full + "/" + _SEGMENT)):
        allow_large_bodies_matching(
            quart_app, method, re.compile(pattern), knowledge.max_body_bytes
        )
    base = mount + "/bots/<bot_id>/documents"

    async def principal() -> Principal:
        return await auth.authenticate(bearer())

    def check_declared() -> str:
        boundary = multipart_boundary(request.headers.get("Content-Type"))
        declared = request.content_length
        if declared is not None and declared > knowledge.max_body_bytes:
            raise document_too_large(knowledge.config.max_document_bytes)
        if declared == 0:
            raise bad_upload("the request body is empty")
        return boundary

    async def receive() -> bytes | None:
        try:
            chunk: bytes = await request.body.__anext__()
        except StopAsyncIteration:
            return None
        except RequestEntityTooLarge:
            raise document_too_large(knowledge.config.max_document_bytes) from None
        return chunk

    async def writable(bot_id: str) -> tuple[Principal, BotRef]:
        me = await principal()
        return me, await bots.bot_for_write(me, bot_id)

    @route(target, base, ["GET"], family="bot")
    async def list_documents(bot_id: str) -> Response:
        bot = await bots.bot_for_read(await principal(), bot_id)
        limit, after = _page_args()
        docs, more = await knowledge.list(bot, limit=limit, after=after)
        cursor = f"d{docs[-1].document_no}" if more and docs else None
        items = [document_json(d, bot.bot_id) for d in docs]
        return ok({"items": items}, has_more=more, next_cursor=cursor)

    @route(target, base, ["POST"], family="bot")
    async def upload(bot_id: str) -> Response:
        me, bot = await writable(bot_id)
        boundary = check_declared()
        doc = await knowledge.upload(bot, me.participant_id, boundary=boundary, receive=receive)
        return ok(document_json(doc, bot.bot_id), 201)

    @route(target, base + "/<doc_id>", ["GET"], family="bot")
    async def get_document(bot_id: str, doc_id: str) -> Response:
        bot = await bots.bot_for_read(await principal(), bot_id)
        return ok(document_json(await knowledge.get(bot, doc_id), bot.bot_id))

    @route(target, base + "/<doc_id>", ["PUT"], family="bot")
    async def replace(bot_id: str, doc_id: str) -> Response:
        me, bot = await writable(bot_id)
        await knowledge.get(bot, doc_id)  # 404 before reading the body
        boundary = check_declared()
        doc = await knowledge.replace(
            bot, doc_id, me.participant_id, boundary=boundary, receive=receive
        )
        return ok(document_json(doc, bot.bot_id))

    @route(target, base + "/<doc_id>", ["DELETE"], family="bot")
    async def delete(bot_id: str, doc_id: str) -> Response:
        _, bot = await writable(bot_id)
        await knowledge.delete(bot, doc_id)
        return ok({"id": doc_id, "deleted": True})
