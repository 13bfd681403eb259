"""Knowledge documents of a bot's collection: upload, list, get, replace, delete.

Files live in the data directory, ``knowledge/files/<collection>/<document_id>-<sha256>``
(kept so a document can be indexed again after a restart); uploads stream to
``knowledge/tmp/`` first. A new file is placed before its row is committed,
and an old file is removed after the row that named it is gone.

After a delete (of a document, or of a bot's whole collection through
:meth:`delete_collection_txn`, the ``BotDeletionHook``) the janitor task merges
the collection's FTS5 index (dropping the deleted terms from the file) and asks
the checkpointer for a TRUNCATE checkpoint, so no text of it stays in the
database or its WAL.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import trio

from bridges.embeddings import Embedder
from conf.knowledge import KnowledgeConfig
from homeserver.clock import WallClock
from homeserver.media.blobs import BlobStore
from homeserver.media.uploads import MULTIPART_SLACK, Receive, bad_upload
from homeserver.modules.scaibot.knowledge.extract import sniff
from homeserver.modules.scaibot.knowledge.index import Indexer
from homeserver.modules.scaibot.knowledge.retrieval import KnowledgeRetriever, Versions
from homeserver.modules.scaibot.knowledge.upload import Received, receive_document
from homeserver.modules.scaibot.ports import BotRef
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from protocol.media import safe_filename
from storage import knowledge as store
from storage.knowledge import Document
from storage.scaibot.conversations import forget_knowledge_txn

log = logging.getLogger("homeserver.knowledge")

MAX_NAME_CHARS = 255


def document_not_found(document_id: str) -> ApiError:
    return ApiError(
        ErrorCode.DOCUMENT_NOT_FOUND,
        f"no document {document_id[:80]!r} in this bot's knowledge",
        details={"document_id": document_id[:80]},
    )


def unsupported() -> ApiError:
    return ApiError(
        ErrorCode.DOCUMENT_UNSUPPORTED,
        "the file is not a supported document type (txt, md, html, pdf, docx)",
    )


class KnowledgeService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        *,
        data_dir: Path,
        config: KnowledgeConfig,
        embedder: Embedder | None,
        on_erased: Callable[[], None] = lambda: None,
        fsync: bool = False,
        idle_timeout: float = 60.0,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self.config = config
        self.max_body_bytes = config.max_document_bytes + MULTIPART_SLACK
        self._root = data_dir / "knowledge"
        self._temps = BlobStore(self._root, fsync=fsync)
        self._on_erased = on_erased
        self._idle_timeout = idle_timeout
        self.retriever = KnowledgeRetriever(
            readers,
            embedder,
            Versions(),
            mode=config.retrieval if embedder is not None else "bm25",
            candidates=config.candidates,
            bm25_budget=config.bm25_budget,
        )
        self.indexer = Indexer(
            writer,
            readers,
            clock,
            config,
            embedder,
            path_of=self.path_of,
            on_indexed=self.retriever.invalidate,
        )
        self._janitor_send, self._janitor_recv = trio.open_memory_channel[tuple[str, str]](math.inf)
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self.erasures = 0

    def prepare(self) -> None:
        self._temps.prepare()

    def _dir(self, collection_id: str) -> Path:
        return self._root / "files" / hashlib.sha256(collection_id.encode()).hexdigest()[:32]

    def path_of(self, doc: Document) -> Path:
        return self._dir(doc.collection_id) / f"{doc.document_id}-{doc.sha256}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.indexer.run)
            nursery.start_soon(self._janitor)
            task_status.started()

    # ------------------------------------------------------------------ reads

    async def collection_exists(self, collection_id: str) -> bool:
        """Whether knowledge holds this collection (``linked`` mode checks it)."""
        return await self._readers.read(store.collection_no, collection_id) is not None

    async def list(self, bot: BotRef, *, limit: int, after: int) -> tuple[list[Document], bool]:
        docs = await self._readers.read(
            lambda conn: store.list_documents(
                conn, bot.collection_id, after_no=after, limit=limit + 1
            )
        )
        return docs[:limit], len(docs) > limit

    async def get(self, bot: BotRef, document_id: str) -> Document:
        doc = await self._readers.read(store.get_document, document_id, bot.collection_id)
        if doc is None:
            raise document_not_found(document_id)
        return doc

    # ----------------------------------------------------------------- writes

    async def _receive(self, boundary: str, receive: Receive) -> tuple[Received, str]:
        got = await receive_document(
            self._temps,
            boundary,
            receive,
            max_bytes=self.config.max_document_bytes,
            idle_timeout=self._idle_timeout,
        )
        doc_type = sniff(got.head, got.filename)
        if doc_type is None:
            got.temp.unlink(missing_ok=True)
            raise unsupported()
        return got, doc_type

    def _name(self, got: Received) -> str:
        name = got.name or got.filename or "document"
        if len(name) > MAX_NAME_CHARS:
            raise bad_upload(f"at most {MAX_NAME_CHARS} characters", "name")
        return name

    def _place(self, temp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    async def upload(
        self, bot: BotRef, uploader_id: str, *, boundary: str, receive: Receive
    ) -> Document:
        got, doc_type = await self._receive(boundary, receive)
        now = self._clock()
        try:
            name = self._name(got)
            doc = Document(
                0,
                ids.random_id("doc_", 12),
                bot.collection_id,
                0,
                name,
                safe_filename(got.filename, fallback="document"),
                doc_type,
                got.size,
                got.sha256,
                1,
                "uploaded",
                None,
                0,
                None,
                uploader_id,
                now,
                now,
                None,
            )
            final = self.path_of(doc)
            await trio.to_thread.run_sync(self._place, got.temp, final)
        finally:
            got.temp.unlink(missing_ok=True)
        try:
            stored = await self._writer.write(self._insert_txn, doc)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        self.indexer.submit(stored.document_id, stored.generation)
        return stored

    def _insert_txn(self, conn: sqlite3.Connection, doc: Document) -> Document:
        number = store.ensure_collection_txn(conn, doc.collection_id, doc.created_at_ms)
        if store.count_documents(conn, number) >= self.config.max_documents:
            raise bad_upload(
                f"a bot's knowledge holds at most {self.config.max_documents} documents"
            )
        store.insert_document_txn(conn, _with_collection(doc, number))
        found = store.get_document(conn, doc.document_id)
        assert found is not None
        return found

    async def replace(
        self, bot: BotRef, document_id: str, uploader_id: str, *, boundary: str, receive: Receive
    ) -> Document:
        old = await self.get(bot, document_id)
        got, doc_type = await self._receive(boundary, receive)
        try:
            name = self._name(got)
            final = self._dir(bot.collection_id) / f"{document_id}-{got.sha256}"
            await trio.to_thread.run_sync(self._place, got.temp, final)
        finally:
            got.temp.unlink(missing_ok=True)

        def txn(conn: sqlite3.Connection) -> tuple[Document, Document]:
            current = store.get_document(conn, document_id, bot.collection_id)
            if current is None:
                raise document_not_found(document_id)
            # The old text leaves transcripts too (their turns keep markers and scores).
            forget_knowledge_txn(conn, document_id=document_id)
            store.replace_document_txn(
                conn,
                current,
                name=name,
                filename=safe_filename(got.filename, fallback="document"),
                doc_type=doc_type,
                size=got.size,
                sha256=got.sha256,
                now_ms=self._clock(),
            )
            fresh = store.get_document(conn, document_id)
            assert fresh is not None
            return current, fresh

        try:
            previous, fresh = await self._writer.write(txn)
        except BaseException:
            if got.sha256 != old.sha256:
                final.unlink(missing_ok=True)
            raise
        self.retriever.invalidate(bot.collection_id)
        if previous.sha256 != fresh.sha256:
            await trio.to_thread.run_sync(self._unlink, self.path_of(previous))
        self.indexer.submit(fresh.document_id, fresh.generation)
        self._janitor_send.send_nowait(("optimize", bot.collection_id))
        return fresh

    async def delete(self, bot: BotRef, document_id: str) -> None:
        def txn(conn: sqlite3.Connection) -> Document:
            doc = store.get_document(conn, document_id, bot.collection_id)
            if doc is None:
                raise document_not_found(document_id)
            store.delete_document_txn(conn, doc)
            forget_knowledge_txn(conn, document_id=doc.document_id)
            return doc

        doc = await self._writer.write(txn)
        self.retriever.invalidate(bot.collection_id)
        await trio.to_thread.run_sync(self._unlink, self.path_of(doc))
        self._janitor_send.send_nowait(("optimize", bot.collection_id))

    def create_collection_txn(self, conn: sqlite3.Connection, collection_id: str) -> None:
        """For the bot-creating write transaction: the collection exists from then on
        (``collection_exists`` is true before its first document)."""
        store.ensure_collection_txn(conn, collection_id, self._clock())

    def delete_collection_txn(self, conn: sqlite3.Connection, bot: BotRef) -> None:
        """The ``BotDeletionHook``: runs inside the bot-deleting write transaction."""
        store.delete_collection_txn(conn, bot.collection_id)
        # The PostgreSQL writer runs transactions on a thread of its own: trio objects
        # are touched only from trio's thread (run_sync_soon is safe from any thread,
        # and runs before the writer's answer resumes the caller).
        if self._trio_token is None:
            self._collection_gone(bot.collection_id)
        else:
            self._trio_token.run_sync_soon(self._collection_gone, bot.collection_id)

    def _collection_gone(self, collection_id: str) -> None:
        self.retriever.invalidate(collection_id)
        self._janitor_send.send_nowait(("collection", collection_id))

    @staticmethod
    def _unlink(path: Path) -> None:
        path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- janitor

    async def _janitor(self) -> None:
        async for kind, collection_id in self._janitor_recv:
            work = {(kind, collection_id)}
            while True:
                try:
                    work.add(self._janitor_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            for kind_, cid in sorted(work):
                try:
                    await self._tidy(kind_, cid)
                except Exception:
                    log.exception("tidying knowledge collection %s failed", cid)
            self.erasures += 1
            if self.config.scrub_on_delete:
                self._on_erased()

    async def _tidy(self, kind: str, collection_id: str) -> None:
        if kind == "optimize":
            await self._writer.write(store.optimize_txn, collection_id)
            return
        self.retriever.invalidate(collection_id)
        if not await self.collection_exists(collection_id):
            await trio.to_thread.run_sync(
                lambda: shutil.rmtree(self._dir(collection_id), ignore_errors=True)
            )


def _with_collection(doc: Document, number: int) -> Document:
    from dataclasses import replace

    return replace(doc, collection_no=number)
