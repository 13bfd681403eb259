"""Pure knowledge types shared by the ScaiBot chat turn and the knowledge index.

``KnowledgeSettings`` is a bot's ``knowledge_settings`` (seed 002: ``top_k``,
``score_threshold``, ``max_chunks_per_doc``, ``deduplicate``); a
``RetrievedChunk`` is what retrieval hands the turn, scored 0-1 in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import Family, invalid

_KEYS = {"top_k", "score_threshold", "max_chunks_per_doc", "deduplicate"}


@dataclass(frozen=True, slots=True)
class KnowledgeSettings:
    top_k: int = 5
    score_threshold: float = 0.3
    max_chunks_per_doc: int | None = None
    deduplicate: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "score_threshold": self.score_threshold,
            "max_chunks_per_doc": self.max_chunks_per_doc,
            "deduplicate": self.deduplicate,
        }


def parse_knowledge_settings(
    value: object, field: str = "knowledge_settings", *, family: Family = "bot"
) -> KnowledgeSettings:
    """Validate a ``knowledge_settings`` object; absent keys take their defaults."""
    if value is None:
        return KnowledgeSettings()
    if not isinstance(value, Mapping):
        raise invalid(field, "must be an object", family=family)
    for key in value:
        if key not in _KEYS:
            raise invalid(f"{field}.{key}", "is not a knowledge setting", family=family)
    top_k = value.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise invalid(f"{field}.top_k", "must be an integer from 1 to 50", family=family)
    threshold = value.get("score_threshold", 0.3)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 <= threshold <= 1.0
    ):
        raise invalid(f"{field}.score_threshold", "must be a number from 0 to 1", family=family)
    per_doc = value.get("max_chunks_per_doc")
    if per_doc is not None and (
        isinstance(per_doc, bool) or not isinstance(per_doc, int) or not 1 <= per_doc <= 50
    ):
        raise invalid(
            f"{field}.max_chunks_per_doc", "must be null or an integer from 1 to 50", family=family
        )
    dedupe = value.get("deduplicate", True)
    if not isinstance(dedupe, bool):
        raise invalid(f"{field}.deduplicate", "must be true or false", family=family)
    return KnowledgeSettings(top_k, float(threshold), per_doc, dedupe)


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    chunk_id: str
    document_id: str
    text: str
    score: float  # 0-1, comparable with score_threshold in every retrieval mode

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "text": self.text,
            "score": round(self.score, 4),
        }
