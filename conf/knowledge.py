"""``[knowledge]``: ScaiBot knowledge documents, indexing and retrieval (CONTRACT 13).

Kept beside conf/sections.py (same helpers, same style) so the ScaiBot tables
do not all grow one file. Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conf.sections import SectionError, _bool, _fail, _float, _int, _table

EMBEDDINGS = ("wordllama", "openai", "none")
RETRIEVAL = ("hybrid", "bm25", "vector")
_URL_RE = re.compile(r"https?://[^\s]+")


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    """``[knowledge]``. ``embeddings_url`` etc. are empty strings when unset."""

    max_document_bytes: int = 52428800
    max_documents: int = 1000
    max_chunks_per_document: int = 20000
    chunk_tokens: int = 500
    chunk_overlap: int = 50
    retrieval: str = "hybrid"
    candidates: int = 50
    bm25_budget: int = 3000
    embeddings: str = "wordllama"
    embeddings_url: str = ""
    embeddings_model: str = ""
    embeddings_api_key_env: str = ""
    embeddings_timeout_s: float = 30.0
    extract_timeout_s: float = 600.0
    index_workers: int = 1
    extract_processes: int = 1
    scrub_on_delete: bool = True
    # Off: no document routes and no index (ScaiBot answers without retrieval). Cluster
    # mode needs it off: the index is SQLite's FTS5 and vectors in the database file.
    enabled: bool = True


def _choice(value: object, label: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(label, "one of " + ", ".join(choices), value)
    return value


def _plain(value: object, label: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        _fail(label, "a string of at most 2048 characters", value)
    if value and pattern is not None and not pattern.fullmatch(value):
        _fail(label, f"empty or a string matching {pattern.pattern}", value)
    return value


def knowledge_section(value: object, label: str = "knowledge") -> KnowledgeConfig:
    if isinstance(value, KnowledgeConfig):
        return value
    t = _table(value, label, set(KnowledgeConfig.__dataclass_fields__))
    d = KnowledgeConfig()

    def num(key: str, lo: int, hi: int) -> int:
        return _int(t.get(key, getattr(d, key)), f"{label}.{key}", lo, hi)

    cfg = KnowledgeConfig(
        max_document_bytes=num("max_document_bytes", 1, 1 << 40),
        max_documents=num("max_documents", 1, 1_000_000),
        max_chunks_per_document=num("max_chunks_per_document", 1, 10_000_000),
        chunk_tokens=num("chunk_tokens", 16, 8192),
        chunk_overlap=num("chunk_overlap", 0, 4096),
        retrieval=_choice(t.get("retrieval", d.retrieval), f"{label}.retrieval", RETRIEVAL),
        candidates=num("candidates", 1, 1000),
        bm25_budget=num("bm25_budget", 1, 100_000_000),
        embeddings=_choice(t.get("embeddings", d.embeddings), f"{label}.embeddings", EMBEDDINGS),
        embeddings_url=_plain(t.get("embeddings_url", ""), f"{label}.embeddings_url", _URL_RE),
        embeddings_model=_plain(t.get("embeddings_model", ""), f"{label}.embeddings_model"),
        embeddings_api_key_env=_plain(
            t.get("embeddings_api_key_env", ""), f"{label}.embeddings_api_key_env"
        ),
        embeddings_timeout_s=_float(
            t.get("embeddings_timeout_s", d.embeddings_timeout_s),
            f"{label}.embeddings_timeout_s",
            0,
            3600,
        ),
        extract_timeout_s=_float(
            t.get("extract_timeout_s", d.extract_timeout_s), f"{label}.extract_timeout_s", 0, 86400
        ),
        index_workers=num("index_workers", 1, 64),
        extract_processes=num("extract_processes", 0, 64),
        scrub_on_delete=_bool(t.get("scrub_on_delete", True), f"{label}.scrub_on_delete"),
        enabled=_bool(t.get("enabled", True), f"{label}.enabled"),
    )
    if cfg.chunk_overlap >= cfg.chunk_tokens:
        raise SectionError(f"{label}.chunk_overlap: must be below chunk_tokens")
    if cfg.embeddings == "openai" and not (cfg.embeddings_url and cfg.embeddings_model):
        raise SectionError(
            f"{label}.embeddings_url: embeddings = 'openai' needs embeddings_url and "
            "embeddings_model"
        )
    if cfg.retrieval != "bm25" and cfg.embeddings == "none":
        raise SectionError(f"{label}.retrieval: must be 'bm25' when embeddings = 'none'")
    return cfg


def default_knowledge() -> KnowledgeConfig:
    return KnowledgeConfig()
