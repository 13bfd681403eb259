"""The background indexer: ``uploaded -> extracting -> indexing -> indexed | failed``.

A server-owned service (``await nursery.start(indexer.run)``). Documents are
queued by id and generation; a replaced document's old generation is dropped
wherever it is in the pipeline (every status write and the final chunk write
check the generation). At start-up every document left ``uploaded``,
``extracting`` or ``indexing`` is queued again: the chunks of a document are
written in the one transaction that marks it ``indexed``, so a run cut short
left nothing behind and starts over.

Extraction runs in worker processes (PDF, DOCX) or threads (see extractor) with a
timeout, embedding in worker threads: never on the loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trio

from bridges.embeddings import Embedder, EmbeddingError
from conf.knowledge import KnowledgeConfig
from homeserver.clock import WallClock
from homeserver.modules.scaibot.knowledge.extract import ExtractionError
from homeserver.modules.scaibot.knowledge.extractor import Extractor
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.knowledge_rank import content_key
from protocol.knowledge_text import chunk_text
from storage import knowledge as store

log = logging.getLogger("homeserver.knowledge")

EMBED_BATCH = 256
Job = tuple[str, int]  # document_id, generation


class Indexer:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        config: KnowledgeConfig,
        embedder: Embedder | None,
        *,
        path_of: Callable[[store.Document], Path],
        on_indexed: Callable[[str], None],
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._config = config
        self._embedder = embedder
        self._path_of = path_of
        self._on_indexed = on_indexed
        self._send, self._recv = trio.open_memory_channel[Job](math.inf)
        self.extractor = Extractor(
            processes=config.extract_processes, timeout_s=config.extract_timeout_s
        )
        self.indexed = 0
        self.failed = 0
        # Told (document_id, status) after each committed status change (tests, metrics).
        self.observer: Callable[[str, str], None] = lambda document_id, status: None

    def submit(self, document_id: str, generation: int) -> None:
        self._send.send_nowait((document_id, generation))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for doc in await self._readers.read(store.pending_documents):
            log.info("resuming indexing of %s (was %s)", doc.document_id, doc.status)
            self.submit(doc.document_id, doc.generation)
        async with trio.open_nursery() as nursery:
            for _ in range(self._config.index_workers):
                nursery.start_soon(self._work)
            task_status.started()

    async def _work(self) -> None:
        async for document_id, generation in self._recv:
            try:
                await self._index(document_id, generation)
            except Exception:
                log.exception("indexing %s failed unexpectedly", document_id)
                await self._fail(document_id, generation, "internal error while indexing")

    async def _status(self, document_id: str, generation: int, status: str) -> bool:
        changed = await self._writer.write(
            store.set_status_txn, document_id, generation, status, self._clock()
        )
        if changed:
            self.observer(document_id, status)
        return changed

    async def _fail(self, document_id: str, generation: int, reason: str) -> None:
        self.failed += 1
        changed = await self._writer.write(
            store.set_status_txn, document_id, generation, "failed", self._clock(), reason[:500]
        )
        if changed:
            self.observer(document_id, "failed")

    async def _index(self, document_id: str, generation: int) -> None:
        doc = await self._readers.read(store.get_document, document_id)
        if doc is None or doc.generation != generation or doc.status in ("indexed", "failed"):
            return
        if not await self._status(document_id, generation, "extracting"):
            return
        path = self._path_of(doc)
        try:
            text = await self.extractor.extract(path, doc.doc_type)
        except ExtractionError as exc:
            await self._fail(document_id, generation, str(exc))
            return
        except FileNotFoundError:
            await self._fail(document_id, generation, "the uploaded file is missing")
            return
        if not await self._status(document_id, generation, "indexing"):
            return
        pieces = await trio.to_thread.run_sync(
            lambda: chunk_text(
                text, target=self._config.chunk_tokens, overlap=self._config.chunk_overlap
            )
        )
        if len(pieces) > self._config.max_chunks_per_document:
            limit = self._config.max_chunks_per_document
            await self._fail(document_id, generation, f"the document gives over {limit} chunks")
            return
        blobs: list[bytes | None] = [None] * len(pieces)
        model = dim = None
        if self._embedder is not None:
            try:
                blobs = list(await self._embed(pieces))
            except EmbeddingError as exc:
                await self._fail(document_id, generation, f"embedding failed: {exc}")
                return
            model, dim = self._embedder.model, self._embedder.dim
        chunks = [
            store.NewChunk(ids.random_id("chk_", 16), piece, content_key(piece), blob)
            for piece, blob in zip(pieces, blobs, strict=True)
        ]
        stored = await self._writer.write(
            lambda conn: store.store_chunks_txn(
                conn,
                document_id,
                generation,
                chunks,
                embed_model=model,
                embed_dim=dim,
                text_chars=len(text),
                now_ms=self._clock(),
            )
        )
        if stored:
            self.indexed += 1
            self._on_indexed(doc.collection_id)
            self.observer(document_id, "indexed")

    async def _embed(self, pieces: list[str]) -> list[bytes]:
        assert self._embedder is not None
        out: list[bytes] = []
        for start in range(0, len(pieces), EMBED_BATCH):
            batch = pieces[start : start + EMBED_BATCH]
            matrix = await trio.to_thread.run_sync(self._embedder.embed, batch)
            rows = np.asarray(matrix, dtype="<f4")
            out.extend(row.tobytes() for row in rows)
        return out
