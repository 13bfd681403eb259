"""AI participants in rooms (CONTRACT 12): the participant registry and the engagement runner."""

from homeserver.ai.participants import AiParticipantService, NewAi
from homeserver.ai.runner import AiRunner

__all__ = ["AiParticipantService", "AiRunner", "NewAi"]
