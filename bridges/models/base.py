"""The one narrow model interface every AI feature uses (CONTRACT 10).

    backend.stream_chat(messages, model, max_tokens, temperature)
        -> async generator of Delta ... then one Finish

Failures are :class:`protocol.errors.ApiError` with a model-family code
(``MODEL_UNAVAILABLE``, ``BACKEND_ERROR``, ``BACKEND_TIMEOUT``), raised before
the first item or midway. Callers iterate inside ``contextlib.aclosing`` (or
cancel the task): closing the iterator closes the upstream request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from conf.sections import ModelEntry
from protocol.llm import ChatMessage, Usage


@dataclass(frozen=True, slots=True)
class Delta:
    """Some generated text."""

    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a generation: why, and the usage the backend reported (or estimated)."""

    finish_reason: str  # "stop" | "length"
    usage: Usage


StreamItem = Delta | Finish


class ModelBackend(Protocol):
    """A source of chat completions: an OpenAI-compatible server, or ``dev/echo``."""

    name: str

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        model: ModelEntry,
        max_tokens: int,
        temperature: float | None,
    ) -> AsyncGenerator[StreamItem, None]: ...


class ChatModels(Protocol):
    """What AI features depend on: the models offered, and streaming from one by slug.

    :class:`bridges.models.ModelRegistry` implements it; the server may wrap it
    (metrics, limits) without the features knowing.
    """

    def models(self) -> list[ModelEntry]: ...

    def get(self, slug: str) -> ModelEntry:
        """The model, or 404 ``MODEL_NOT_FOUND``."""
        ...

    def has(self, slug: str) -> bool: ...

    def stream_chat(
        self,
        slug: str,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream from the backend serving ``slug`` (``MODEL_NOT_FOUND`` raised at once)."""
        ...
