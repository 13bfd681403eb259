"""``[knowledge]`` settings: defaults, file and environment, validation messages."""

from __future__ import annotations

import pytest

from conf import ConfigError, Settings, from_mapping, load
from conf.knowledge import KnowledgeConfig
from homeserver.modules.scaibot.knowledge.build import build_embedder


def test_defaults() -> None:
    k = Settings().knowledge
    assert k == KnowledgeConfig()
    assert k.max_document_bytes == 50 * 1024 * 1024
    assert (k.chunk_tokens, k.chunk_overlap, k.retrieval, k.embeddings) == (
        500,
        50,
        "hybrid",
        "wordllama",
    )


def test_file_and_environment() -> None:
    s = from_mapping({"knowledge": {"max_documents": 5, "retrieval": "bm25"}})
    assert s.knowledge.max_documents == 5
    assert s.knowledge.retrieval == "bm25"
    s = load(None, env={"HOMESERVER_KNOWLEDGE_MAX_DOCUMENT_BYTES": "1000"})
    assert s.knowledge.max_document_bytes == 1000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"chunk_tokens": 8}, "knowledge.chunk_tokens"),
        ({"chunk_overlap": 600}, "knowledge.chunk_overlap"),
        ({"retrieval": "magic"}, "knowledge.retrieval"),
        ({"embeddings": "openai"}, "embeddings_url"),
        ({"embeddings": "openai", "embeddings_url": "ftp://x"}, "knowledge.embeddings_url"),
        ({"embeddings": "none"}, "knowledge.retrieval: must be 'bm25'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"extract_processes": -1}, "knowledge.extract_processes"),
    ],
)
def test_invalid(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        from_mapping({"knowledge": table})


def test_embedder_choice() -> None:
    assert build_embedder(KnowledgeConfig(embeddings="none", retrieval="bm25")) is None
    assert build_embedder(KnowledgeConfig()) is not None
    openai = build_embedder(
        KnowledgeConfig(
            embeddings="openai", embeddings_url="http://127.0.0.1:9/v1", embeddings_model="m"
        )
    )
    assert openai is not None
    assert openai.model == "m"
