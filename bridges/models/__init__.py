"""Model backends: OpenAI-compatible HTTP servers and the built-in ``dev/echo``."""

from bridges.models.base import ChatModels, Delta, Finish, ModelBackend, StreamItem
from bridges.models.echo import ECHO_SLUG, EchoBackend
from bridges.models.openai import OpenAIBackend
from bridges.models.registry import ModelRegistry, build_registry

__all__ = [
    "ECHO_SLUG",
    "ChatModels",
    "Delta",
    "EchoBackend",
    "Finish",
    "ModelBackend",
    "ModelRegistry",
    "OpenAIBackend",
    "StreamItem",
    "build_registry",
]
