"""Test doubles plugged in through the module's seams: a retriever and model wrappers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from bridges.models.base import ChatModels, Delta, StreamItem
from conf.sections import ModelEntry
from protocol.errors import ApiError, ErrorCode
from protocol.knowledge import KnowledgeSettings, RetrievedChunk
from protocol.llm import ChatMessage

CHUNKS = [
    RetrievedChunk("chk_1", "doc_refunds", "Refunds are processed within 14 business days.", 0.84),
    RetrievedChunk("chk_2", "doc_shipping", "Shipping is free over 50 euro.", 0.51),
]


@dataclass
class FixedRetriever:
    chunks: list[RetrievedChunk] = field(default_factory=lambda: list(CHUNKS))
    calls: list[tuple[str, str, KnowledgeSettings]] = field(default_factory=list)

    async def retrieve(
        self, collection_id: str, query: str, settings: KnowledgeSettings
    ) -> list[RetrievedChunk]:
        self.calls.append((collection_id, query, settings))
        return self.chunks[: settings.top_k]


class Recording:
    """Delegates to the real models; records prompts, items yielded and closures."""

    def __init__(self, inner: ChatModels, *, fail_after: int | None = None) -> None:
        self._inner = inner
        self.prompts: list[list[ChatMessage]] = []
        self.max_tokens: list[int] = []
        self.yielded = 0
        self.closed = 0
        self._fail_after = fail_after

    def models(self) -> list[ModelEntry]:
        return self._inner.models()

    def get(self, slug: str) -> ModelEntry:
        return self._inner.get(slug)

    def has(self, slug: str) -> bool:
        return self._inner.has(slug)

    async def stream_chat(
        self,
        slug: str,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        self.prompts.append(list(messages))
        self.max_tokens.append(max_tokens)
        inner = self._inner.stream_chat(slug, messages, max_tokens, temperature)
        try:
            async for item in inner:
                if self._fail_after is not None and self.yielded >= self._fail_after:
                    raise ApiError(ErrorCode.BACKEND_ERROR, "upstream said 502")
                self.yielded += isinstance(item, Delta)
                yield item
        finally:
            await inner.aclose()
            self.closed += 1
