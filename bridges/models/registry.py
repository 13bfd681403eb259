"""Model slugs → (backend, model entry), built once from ``[models]`` settings."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from bridges.models.base import ModelBackend, StreamItem
from bridges.models.echo import ECHO_MODEL, EchoBackend
from bridges.models.openai import OpenAIBackend
from conf.sections import BackendSettings, ModelEntry, ModelsSettings
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage

HttpBackendFactory = Callable[[BackendSettings], ModelBackend]


@dataclass(frozen=True, slots=True)
class _Route:
    backend: ModelBackend
    model: ModelEntry


class ModelRegistry:
    """Every model this server offers, in configuration order (``dev/echo`` first)."""

    def __init__(self, routes: Sequence[tuple[ModelBackend, ModelEntry]]) -> None:
        self._routes = {model.slug: _Route(backend, model) for backend, model in routes}

    def models(self) -> list[ModelEntry]:
        return [r.model for r in self._routes.values()]

    def get(self, slug: str) -> ModelEntry:
        """The model, or 404 ``MODEL_NOT_FOUND``."""
        return self._route(slug).model

    def has(self, slug: str) -> bool:
        return slug in self._routes

    def _route(self, slug: str) -> _Route:
        route = self._routes.get(slug)
        if route is None:
            raise ApiError(ErrorCode.MODEL_NOT_FOUND, f"model: no model {slug[:128]!r}")
        return route

    def stream_chat(
        self,
        slug: str,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        temperature: float | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream from the backend serving ``slug`` (raises ``MODEL_NOT_FOUND`` at once)."""
        route = self._route(slug)
        return route.backend.stream_chat(messages, route.model, max_tokens, temperature)


def build_registry(
    settings: ModelsSettings,
    *,
    dev_echo: bool,
    http_backend: HttpBackendFactory | None = None,
) -> ModelRegistry:
    """The registry for ``settings``. Each ``[[models.backends]]`` entry becomes an
    :class:`OpenAIBackend` unless ``http_backend`` builds it (tests may swap it)."""
    factory: HttpBackendFactory = http_backend or OpenAIBackend
    routes: list[tuple[ModelBackend, ModelEntry]] = []
    if dev_echo:
        routes.append((EchoBackend(settings.dev_echo_delay_ms), ECHO_MODEL))
    for backend_settings in settings.backends:
        backend = factory(backend_settings)
        routes.extend((backend, model) for model in backend_settings.models)
    return ModelRegistry(routes)
