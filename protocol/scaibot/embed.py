"""Embed tokens ``sbt_...`` (seed 002 "Embed tokens"), sans-I/O.

A token is ``sbt_`` + base64url(claims JSON) + ``.`` + base64url(HMAC-SHA256 of
the claims part under the server secret). Claims: ``tid`` (the token id, which
keys the stored visitor fields and the revocation), ``bot``, ``vid`` (visitor
id), ``exp`` (expiry, ms since epoch). Verification checks the signature in
constant time before anything else, then the expiry against ``now_ms``; the
caller then checks the stored row (revocation) on every use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from protocol.errors import ApiError, ErrorCode

PREFIX = "sbt_"
MIN_TTL = 60
MAX_TTL = 86400
DEFAULT_TTL = 3600
MAX_TOKEN = 1024


@dataclass(frozen=True, slots=True)
class EmbedClaims:
    token_id: str
    bot_id: str
    visitor_id: str
    expires_at_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest())


def sign(secret: bytes, claims: EmbedClaims) -> str:
    raw = orjson.dumps(
        {
            "tid": claims.token_id,
            "bot": claims.bot_id,
            "vid": claims.visitor_id,
            "exp": claims.expires_at_ms,
        }
    )
    body = _b64(raw)
    return f"{PREFIX}{body}.{_mac(secret, body)}"


def token_invalid(message: str = "the embed token is invalid or revoked") -> ApiError:
    return ApiError(ErrorCode.EMBED_TOKEN_INVALID, message)


def token_expired() -> ApiError:
    return ApiError(ErrorCode.EMBED_TOKEN_EXPIRED, "the embed token has expired; mint a fresh one")


def verify(secret: bytes, token: str, now_ms: int) -> EmbedClaims:
    """The claims of a well-signed, unexpired token; else 403 INVALID / EXPIRED."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
        raise token_invalid()
    body, dot, mac = token[len(PREFIX) :].partition(".")
    if not dot or not body or not hmac.compare_digest(mac.encode(), _mac(secret, body).encode()):
        raise token_invalid()
    try:
        data = orjson.loads(_unb64(body))
        claims = EmbedClaims(str(data["tid"]), str(data["bot"]), str(data["vid"]), int(data["exp"]))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise token_invalid() from None
    if claims.expires_at_ms <= now_ms:
        raise token_expired()
    return claims


def is_embed_token(bearer: str | None) -> bool:
    return bearer is not None and bearer.startswith(PREFIX)
