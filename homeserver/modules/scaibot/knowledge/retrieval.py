"""Hybrid retrieval: bm25 (FTS5, or its PostgreSQL postings) and a numpy scan of a
per-collection vector matrix.

The matrix (one L2-normalised float32 row per chunk, with the chunk numbers)
is loaded once per collection and kept in memory; every change to the
collection bumps its version, and a matrix of an older version is reloaded on
the next query. Chunk text always comes from the same read snapshot as the
bm25 hits, so a deleted chunk can never be returned even by a stale matrix.
Ranking and scores: protocol.knowledge_rank.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from bridges.embeddings import Embedder, EmbeddingError
from homeserver.store.database import Readers
from protocol.knowledge import KnowledgeSettings, RetrievedChunk
from protocol.knowledge_rank import Candidate, fuse, select
from protocol.knowledge_text import budget_terms, query_terms, term_key
from storage import knowledge as store

log = logging.getLogger("homeserver.knowledge")

MAX_QUERY_CHARS = 4000
MAX_CACHED_COLLECTIONS = 64


# Large collections are scanned in two stages: the first COARSE_DIMS dimensions of
# every row, then the exact score of the best COARSE_KEEP rows. A full 100k x 256 scan
# is bound by memory traffic; this reads a quarter of it. wordllama is trained so that
# leading dimensions carry the most (it offers truncation to 64): on the bench corpus
# the first 64 dimensions alone still rank the answer in the top 5 for 81 % of the
# questions (all 256: 88 %), and the coarse stage only has to keep it in the top 2 %.
COARSE_FROM_ROWS = 20_000
COARSE_DIMS = 64
COARSE_KEEP = 2000


@dataclass(frozen=True, slots=True)
class _Matrix:
    version: int
    chunk_nos: npt.NDArray[np.int64]
    head: npt.NDArray[np.float32]  # every row, all dims (small) or the first COARSE_DIMS
    tail: npt.NDArray[np.float32] | None  # the remaining dims, for large collections


def _matrix(version: int, nos: list[int], blob: bytes, dim: int) -> _Matrix:
    vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(nos), dim)
    chunk_nos = np.asarray(nos, dtype=np.int64)
    if len(nos) < COARSE_FROM_ROWS or dim <= COARSE_DIMS:
        return _Matrix(version, chunk_nos, vectors, None)
    head = np.ascontiguousarray(vectors[:, :COARSE_DIMS])
    tail = np.ascontiguousarray(vectors[:, COARSE_DIMS:])
    return _Matrix(version, chunk_nos, head, tail)


class Versions:
    """A change counter per collection (bumped after every committed change)."""

    def __init__(self) -> None:
        self._v: dict[str, int] = {}

    def get(self, collection_id: str) -> int:
        return self._v.get(collection_id, 0)

    def bump(self, collection_id: str) -> None:
        self._v[collection_id] = self._v.get(collection_id, 0) + 1


class KnowledgeRetriever:
    """Implements ``ports.Retriever`` over the knowledge index."""

    def __init__(
        self,
        readers: Readers,
        embedder: Embedder | None,
        versions: Versions,
        *,
        mode: str = "hybrid",
        candidates: int = 50,
        bm25_budget: int = 3000,
    ) -> None:
        self._readers = readers
        self._embedder = embedder
        self._versions = versions
        self.mode = mode if embedder is not None else "bm25"
        self._candidates = candidates
        self._bm25_budget = bm25_budget
        self._cache: OrderedDict[str, _Matrix] = OrderedDict()

    def invalidate(self, collection_id: str) -> None:
        self._versions.bump(collection_id)
        self._cache.pop(collection_id, None)

    async def retrieve(
        self,
        collection_id: str,
        query: str,
        settings: KnowledgeSettings,
        *,
        mode: str | None = None,
    ) -> list[RetrievedChunk]:
        mode = mode or self.mode
        query = query[:MAX_QUERY_CHARS]
        terms = query_terms(query) if mode != "vector" else []
        qvec: npt.NDArray[np.float32] | None = None
        if mode != "bm25" and self._embedder is not None and query.strip():
            try:
                qvec = (await trio.to_thread.run_sync(self._embedder.embed, [query]))[0]
            except EmbeddingError as exc:
                log.warning("query embedding failed, using bm25 alone: %s", exc)
        if not terms and qvec is None:
            return []
        version = self._versions.get(collection_id)
        cached = self._cache.get(collection_id)
        if cached is not None and cached.version != version:
            cached = None
        if cached is not None and qvec is not None:
            return await self._parallel(collection_id, terms, qvec, cached, mode, settings)
        chunks, matrix = await self._readers.read(
            self._search, collection_id, terms, qvec, cached, version, mode, settings
        )
        if (
            matrix is not None
            and matrix is not cached
            and self._versions.get(collection_id) == version
        ):
            self._cache[collection_id] = matrix
            self._cache.move_to_end(collection_id)
            while len(self._cache) > MAX_CACHED_COLLECTIONS:
                self._cache.popitem(last=False)
        return chunks

    def _load(self, conn: sqlite3.Connection, number: int, version: int) -> _Matrix | None:
        if self._embedder is None:
            return None
        dim = self._embedder.dim
        nos, blob = store.collection_vectors(conn, number, self._embedder.model, dim)
        return _matrix(version, nos, blob, dim)

    async def _parallel(
        self,
        collection_id: str,
        terms: list[str],
        qvec: npt.NDArray[np.float32],
        matrix: _Matrix,
        mode: str,
        settings: KnowledgeSettings,
    ) -> list[RetrievedChunk]:
        """With the matrix cached: the vector scan (numpy) and bm25 (SQLite) run at once
        in two threads (both release the GIL), then one read fetches the winners."""
        limit = max(self._candidates, settings.top_k)
        vector: list[tuple[int, float]] = []
        bm25: list[tuple[int, float]] = []

        async def scan() -> None:
            nonlocal vector
            if len(matrix.chunk_nos):
                vector = await trio.to_thread.run_sync(_top, matrix, qvec, limit)

        async def lexical() -> None:
            nonlocal bm25
            if terms:
                bm25 = await self._readers.read(self._bm25, collection_id, terms, limit)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scan)
            nursery.start_soon(lexical)
        ranked = fuse(bm25, vector, mode)
        return await self._readers.read(_finish, ranked, settings)

    def _bm25(
        self, conn: sqlite3.Connection, collection_id: str, terms: list[str], limit: int
    ) -> list[tuple[int, float]]:
        number = store.collection_no(conn, collection_id)
        if number is None:
            return []
        df = store.term_dfs(conn, number, sorted({term_key(t) for t in terms}))
        chosen = budget_terms(terms, df, self._bm25_budget)
        return store.bm25_search(conn, number, chosen, limit) if chosen else []

    def _search(
        self,
        conn: sqlite3.Connection,
        collection_id: str,
        terms: list[str],
        qvec: npt.NDArray[np.float32] | None,
        cached: _Matrix | None,
        version: int,
        mode: str,
        settings: KnowledgeSettings,
    ) -> tuple[list[RetrievedChunk], _Matrix | None]:
        number = store.collection_no(conn, collection_id)
        if number is None:
            return [], None
        limit = max(self._candidates, settings.top_k)
        bm25 = self._bm25(conn, collection_id, terms, limit) if terms else []
        vector: list[tuple[int, float]] = []
        matrix = cached
        if qvec is not None:
            if matrix is None:
                matrix = self._load(conn, number, version)
            if matrix is not None and len(matrix.chunk_nos):
                vector = _top(matrix, qvec, limit)
        return _finish(conn, fuse(bm25, vector, mode), settings), matrix


def _finish(
    conn: sqlite3.Connection, ranked: list[tuple[int, float]], settings: KnowledgeSettings
) -> list[RetrievedChunk]:
    """The chosen chunks, read in this snapshot: a chunk deleted meanwhile is skipped."""
    rows = store.chunks_by_no(conn, [key for key, _ in ranked])
    candidates = {
        no: Candidate(r.chunk_id, r.document_id, r.text, r.content_key) for no, r in rows.items()
    }
    return select(ranked, candidates, settings)


def _top(matrix: _Matrix, qvec: npt.NDArray[np.float32], limit: int) -> list[tuple[int, float]]:
    """``(chunk_no, cosine)`` of the ``limit`` rows most similar to ``qvec``, best first."""
    if matrix.tail is None:
        sims: Any = matrix.head @ qvec
        rows: Any = np.arange(len(sims))
    else:
        coarse: Any = matrix.head @ qvec[:COARSE_DIMS]
        keep = min(len(coarse), max(COARSE_KEEP, limit))
        rows = np.argpartition(-coarse, keep - 1)[:keep]
        sims = coarse[rows] + matrix.tail[rows] @ qvec[COARSE_DIMS:]
    n = len(sims)
    best = np.argpartition(-sims, limit - 1)[:limit] if n > limit else np.arange(n)
    best = best[np.argsort(-sims[best], kind="stable")]
    return [(int(matrix.chunk_nos[rows[i]]), float(sims[i])) for i in best]
