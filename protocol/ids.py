"""Opaque, prefixed identifiers (CONTRACT section 2).

Random ids use :mod:`secrets`; event ids are not random, they are hashes
(:func:`protocol.canonical.event_id_for`).
"""

from __future__ import annotations

import re
import secrets

ROOM = "room-"
EVENT = "evt-"
MEDIA = "med-"
SESSION = "sess_"
SESSION_MESSAGE = "msg_"
BOT = "bot_"
CONVERSATION = "cnv_"
HUMAN = "p-"
AI = "ai-"
API_KEY = "swk_"
API_KEY_ID = "key_"
ACCESS_TOKEN = "swa_"
REFRESH_TOKEN = "swr_"
REQUEST = "req_"
STREAM_SESSION = "ses-"

AI_TYPES = frozenset({"model", "agent", "bot", "persona"})
PARTICIPANT_TYPES = frozenset({"human", "model", "agent", "bot", "persona", "bridge"})

_ID_RE = re.compile(r"^[A-Za-z0-9_\-:.]{1,128}$")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,63}$")
TENANT = "ten_"
DEFAULT_TENANT = "ten_default"
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def random_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def participant_id(participant_type: str) -> str:
    """Humans get ``p-``, every AI-ish type ``ai-``; bridges count as humans."""
    return random_id(AI if participant_type in AI_TYPES else HUMAN)


def secret_token(prefix: str) -> str:
    """A bearer secret: prefix + 43 URL-safe characters (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def looks_like_id(value: str) -> bool:
    """Cheap shape check for ids arriving in URLs and bodies."""
    return bool(_ID_RE.match(value))
