"""The AI metrics, recorded in one place: every feature calls models through this.

:class:`MeteredModels` wraps the server's :class:`bridges.models.base.ChatModels`
(the registry) and counts generations in flight, time to first token and
upstream errors by code (homeserver.observe.metrics). Sessions, AI participants and
ScaiBot receive it instead of the bare registry and never know.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import trio

from bridges.models.base import ChatModels, Delta, StreamItem
from conf.sections import ModelEntry
from homeserver.observe.metrics import Metrics
from protocol.errors import ApiError
from protocol.llm import ChatMessage


class MeteredModels:
    def __init__(self, inner: ChatModels, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def models(self) -> list[ModelEntry]:
        return self._inner.models()

    def get(self, slug: str) -> ModelEntry:
        return self._inner.get(slug)

    def has(self, slug: str) -> bool:
        return self._inner.has(slug)

    def stream_chat(
        self,
        slug: str,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        # Not itself a generator: an unknown model raises MODEL_NOT_FOUND here, at once.
        return self._metered(self._inner.stream_chat(slug, messages, max_tokens, temperature))

    async def _metered(
        self, stream: AsyncGenerator[StreamItem, None]
    ) -> AsyncGenerator[StreamItem, None]:
        m = self._metrics
        m.generations_in_flight.inc()
        started = trio.current_time()
        waiting = True
        try:
            async with aclosing(stream):
                async for item in stream:
                    if waiting and isinstance(item, Delta):
                        waiting = False
                        m.time_to_first_token.observe(trio.current_time() - started)
                    yield item
        except ApiError as exc:
            if exc.code.family == "model":
                m.upstream_errors.labels(exc.code.name).inc()
            raise
        finally:
            m.generations_in_flight.dec()
