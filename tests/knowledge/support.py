"""Knowledge test helpers: a BotDirectory fake (the seam the bots service fills on
main), generated documents of every format, and waiting for indexing."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from conf import Settings
from homeserver import app
from homeserver.identity.auth import Principal
from homeserver.modules.scaibot.ports import BotRef
from protocol.errors import ApiError, ErrorCode
from protocol.knowledge import KnowledgeSettings
from tests.support import Api, User

DOCS = "/v1/modules/scaibot/bots/{bot}/documents"


@dataclass
class FakeBots:
    """Bots by id; the tenant and creator rules of CONTRACT 13."""

    bots: dict[str, BotRef] = field(default_factory=dict)

    def add(self, bot_id: str, creator: User, tenant_id: str = "ten_default") -> BotRef:
        ref = BotRef(
            bot_id=bot_id,
            tenant_id=tenant_id,
            creator_id=creator.participant_id,
            status="active",
            collection_id="col_" + bot_id.removeprefix("bot_"),
            knowledge_enabled=True,
            knowledge_mode="managed",
            knowledge_collection_id=None,
            knowledge_settings=KnowledgeSettings(),
        )
        self.bots[bot_id] = ref
        return ref

    async def bot_for_read(self, principal: Principal, bot_id: str) -> BotRef:
        bot = self.bots.get(bot_id)
        if bot is None or bot.tenant_id != principal.tenant_id:
            raise ApiError(ErrorCode.BOT_NOT_FOUND, f"bot {bot_id} not found")
        return bot

    async def bot_for_write(self, principal: Principal, bot_id: str) -> BotRef:
        bot = await self.bot_for_read(principal, bot_id)
        if principal.participant_id != bot.creator_id and not principal.is_admin:
            raise ApiError(ErrorCode.AUTHZ_PERMISSION_DENIED, "not the bot's creator")
        return bot


def pdf_bytes(*paragraphs: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for text in paragraphs:
        pdf.multi_cell(0, 8, text)
        pdf.ln(4)
    return bytes(pdf.output())


def encrypted_pdf_bytes(text: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(text))))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def broken_docx_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document>not really")
    return out.getvalue()


async def upload(
    api: Api,
    user: User,
    bot_id: str,
    data: bytes,
    filename: str = "doc.bin",
    name: str | None = None,
    *,
    method: str = "POST",
    doc_id: str | None = None,
) -> Any:
    path = DOCS.format(bot=bot_id) + (f"/{doc_id}" if doc_id else "")
    form = {"name": name} if name is not None else {}
    return await api.call(method, path, user, files={"file": (filename, data)}, data=form)


async def wait_done(api: Api, user: User, bot_id: str, doc_id: str) -> dict[str, Any]:
    path = DOCS.format(bot=bot_id) + f"/{doc_id}"
    with trio.fail_after(60):
        while True:
            doc: dict[str, Any] = await api.ok("GET", path, user)
            if doc["status"] in ("indexed", "failed"):
                return doc
            await trio.sleep(0.02)


@asynccontextmanager
async def start_server(settings: Settings, bots: FakeBots) -> AsyncIterator[app.Running]:
    """tests.support.start_server, with the bot directory the knowledge routes use."""
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(partial(app.run, settings, bots=bots))
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()
