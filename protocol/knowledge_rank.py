"""Pure ranking rules of knowledge retrieval: score normalisation, fusion, selection.

Scores mean the same in every mode
----------------------------------
Each retriever's raw score is mapped to 0-1 by a fixed, query-independent
curve (never min-max over the result list, which would make the best hit 1.0
however poor it is, and ``score_threshold`` meaningless):

- bm25 (FTS5, lower is better): ``s = -bm25``, ``score = s / (s + BM25_HALF)``
  (0.5 at ``BM25_HALF``).
- vectors (cosine): ``score = (cos - COS_FLOOR) / (COS_CEIL - COS_FLOOR)``
  clamped to 0-1.
- hybrid: the order is reciprocal-rank fusion (``sum 1/(k + rank)``, k = 60)
  of both lists, where only bm25 hits with ``-bm25 >= BM25_VOTE`` vote (a
  match on one common word otherwise outranks a good vector hit: measured on
  the bench corpus, hybrid recall@5 0.865 with every hit voting, 0.91 without
  the weak ones); the score is the probabilistic OR of the per-mode scores,
  ``1 - (1 - bm25) (1 - vector)``: a chunk one mode alone finds keeps that
  mode's score, one both find scores higher.

The curve constants were fitted on bench/knowledge_corpus (bench/RESULTS.md):
with the default ``score_threshold`` 0.3 a question whose answer is in the
collection keeps its answer, one about something absent gets little or nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol.knowledge import KnowledgeSettings, RetrievedChunk

RRF_K = 60
BM25_HALF = 12.0
BM25_VOTE = 3.5  # a bm25 hit below this (-bm25) takes no part in the fusion
COS_FLOOR = 0.15
COS_CEIL = 0.65
MODES = ("hybrid", "bm25", "vector")


def bm25_score(raw: float) -> float:
    """FTS5's ``bm25()`` (negative, lower is better) mapped to 0-1."""
    s = max(0.0, -raw)
    return s / (s + BM25_HALF)


def cosine_score(cosine: float) -> float:
    """A cosine similarity mapped to 0-1."""
    return min(1.0, max(0.0, (cosine - COS_FLOOR) / (COS_CEIL - COS_FLOOR)))


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion of ranked lists of keys (best first)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused


def fuse(
    bm25: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    mode: str = "hybrid",
) -> list[tuple[int, float]]:
    """``(key, score 0-1)`` best first. ``bm25``: ``(key, raw bm25)`` best first;
    ``vector``: ``(key, cosine)`` best first."""
    b = {key: bm25_score(raw) for key, raw in bm25}
    v = {key: cosine_score(cos) for key, cos in vector}
    if mode == "bm25":
        return [(key, b[key]) for key, _ in bm25]
    if mode == "vector":
        return [(key, v[key]) for key, _ in vector]
    if mode != "hybrid":
        raise ValueError(f"unknown retrieval mode {mode!r}")
    voters = [key for key, raw in bm25 if -raw >= BM25_VOTE]
    fused = rrf([voters, [key for key, _ in vector]])

    def combined(key: int) -> float:
        return 1.0 - (1.0 - b.get(key, 0.0)) * (1.0 - v.get(key, 0.0))

    order = sorted(fused, key=lambda key: (-fused[key], -combined(key), key))
    return [(key, combined(key)) for key in order]


def content_key(text: str) -> str:
    """Chunks with the same key say the same thing (case and spacing ignored)."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Candidate:
    chunk_id: str
    document_id: str
    text: str
    content_key: str


def select(
    ranked: Sequence[tuple[int, float]],
    candidates: dict[int, Candidate],
    settings: KnowledgeSettings,
) -> list[RetrievedChunk]:
    """Apply ``score_threshold``, ``deduplicate``, ``max_chunks_per_doc`` and ``top_k``
    to a fused ranking, keeping its order."""
    chosen: list[RetrievedChunk] = []
    seen: set[str] = set()
    per_doc: dict[str, int] = {}
    for key, score in ranked:
        if len(chosen) >= settings.top_k:
            break
        if score < settings.score_threshold:
            continue
        c = candidates.get(key)
        if c is None:
            continue
        if settings.deduplicate:
            if c.content_key in seen:
                continue
            seen.add(c.content_key)
        if settings.max_chunks_per_doc is not None:
            if per_doc.get(c.document_id, 0) >= settings.max_chunks_per_doc:
                continue
            per_doc[c.document_id] = per_doc.get(c.document_id, 0) + 1
        chosen.append(RetrievedChunk(c.chunk_id, c.document_id, c.text, score))
    return chosen
