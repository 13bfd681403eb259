"""Build the knowledge service from ``[knowledge]`` (the composition root calls this)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from threadpoolctl import threadpool_limits

from bridges.embeddings import Embedder, OpenAIEmbedder, WordLlamaEmbedder
from conf.knowledge import KnowledgeConfig
from homeserver.clock import WallClock
from homeserver.modules.scaibot.knowledge.service import KnowledgeService
from homeserver.store.database import Readers, Writer


def build_embedder(config: KnowledgeConfig) -> Embedder | None:
    """The configured embedding model (none: bm25 only). Loading is lazy."""
    if config.embeddings == "none":
        return None
    if config.embeddings == "openai":
        import os

        key = (
            os.environ.get(config.embeddings_api_key_env) if config.embeddings_api_key_env else None
        )
        return OpenAIEmbedder(
            config.embeddings_url,
            config.embeddings_model,
            api_key=key,
            timeout_s=config.embeddings_timeout_s,
        )
    return WordLlamaEmbedder()


def build_knowledge(
    writer: Writer,
    readers: Readers,
    clock: WallClock,
    config: KnowledgeConfig,
    *,
    data_dir: Path,
    on_erased: Callable[[], None],
    fsync: bool = False,
    embedder: Embedder | None = None,
) -> KnowledgeService:
    # One BLAS thread: the matrix-vector products here are small and run beside
    # other work; OpenBLAS's own threads made them ten times slower on a busy
    # 2-core machine (bench/RESULTS.md).
    threadpool_limits(limits=1, user_api="blas")
    service = KnowledgeService(
        writer,
        readers,
        clock,
        data_dir=data_dir,
        config=config,
        embedder=embedder if embedder is not None else build_embedder(config),
        on_erased=on_erased,
        fsync=fsync,
    )
    service.prepare()
    return service
