"""ScaiGrid sessions (CONTRACT 11): the service and the reply generations it owns."""

from homeserver.sessions.generation import Generation
from homeserver.sessions.service import SessionLimits, SessionService, SessionView

__all__ = ["Generation", "SessionLimits", "SessionService", "SessionView"]
