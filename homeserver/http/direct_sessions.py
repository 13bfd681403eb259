"""Streamed session replies (CONTRACT 11) on the listener's fast path (homeserver/http/direct.py).

``POST /v1/sessions/{id}/messages`` with ``"stream": true`` and ``GET
/v1/sessions/{id}/messages/{msg_id}/stream``: the same ``AuthService.authenticate`` and
``SessionService.send``/``attach`` calls as the Quart routes, and the SSE body
(:class:`homeserver.http.sse.ReplyBody`, the Quart route's too) written by
:class:`homeserver.http.sse_socket.SocketWriter` straight to the socket. A send that is
not streamed, or whose body is not a JSON object, goes to Quart.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.direct import Exchange, Outcome, Request, Target, split_line
from homeserver.http.sse import ReplyBody
from homeserver.http.sse_socket import SocketWriter
from homeserver.identity.auth import AuthService
from homeserver.sessions import Generation, SessionService
from homeserver.stream.registry import Registry
from protocol.errors import ApiError
from protocol.sessions import parse_send
from protocol.validation import parse_json_body

SEND_ROUTE = "/v1/sessions/{session_id}/messages"
ATTACH_ROUTE = "/v1/sessions/{session_id}/messages/{msg_id}/stream"
_PREFIX = [b"", b"v1", b"sessions"]


def match_session(method: bytes, segs: list[bytes], query: bytes) -> Target | None:
    """The session SSE route a request line asks for, if it is one."""
    if segs[:3] != _PREFIX or len(segs) < 5 or not segs[3] or segs[4] != b"messages":
        return None
    if method == b"POST" and len(segs) == 5:
        return Target("POST", SEND_ROUTE, (segs[3].decode(),), query)
    if method == b"GET" and len(segs) == 7 and segs[5] and segs[6] == b"stream":
        return Target("GET", ATTACH_ROUTE, (segs[3].decode(), segs[5].decode()), query, False)
    return None


def match(head: bytes) -> Target | None:
    """:func:`match_session` on a whole request head."""
    line = split_line(head)
    return match_session(*line) if line is not None else None


class DirectSessions:
    """The session SSE routes; :attr:`registry` holds the open replies (revocation)."""

    def __init__(
        self, auth: AuthService, sessions: SessionService, *, limit: int, registry: Registry
    ) -> None:
        self._auth = auth
        self._sessions = sessions
        self._limit = limit
        self.registry = registry

    def match(self, method: bytes, segments: list[bytes], query: bytes) -> Target | None:
        return match_session(method, segments, query)

    def prepare(self, request: Request) -> dict[str, Any] | None:
        if request.target.method == "GET":
            return {}
        try:
            body = parse_json_body(request.body, max_bytes=self._limit, family="sg")
        except ApiError:
            return None
        return body if body.get("stream") is True else None

    async def respond(self, exchange: Exchange, body: dict[str, Any]) -> Outcome:
        request = exchange.request
        params = request.target.params
        try:
            principal = await self._auth.authenticate(request.bearer)
            if request.target.method == "POST":
                gen = await self._sessions.send(principal, params[0], parse_send(body))
            else:
                gen = await self._sessions.attach(principal, params[0], params[1])
        except Exception as exc:
            return await exchange.refuse(exc, "sg")
        writer = SocketWriter(
            exchange.conn,
            ReplyBody(gen, "sg"),
            heartbeat=self._sessions.limits.heartbeat_seconds,
            principal=principal,
        )
        self.registry.add(writer, close_duplicate=False)
        try:
            complete = await writer.run(exchange.sse_head(_ids(gen)))
        finally:
            self.registry.release(writer)
        return exchange.next(bytes(writer.leftover)) if complete else Outcome("close")


def _ids(gen: Generation) -> list[bytes]:
    fields = [b"x-message-id: " + gen.message_id.encode()]
    if gen.user_message_id:
        fields.append(b"x-user-message-id: " + gen.user_message_id.encode())
    return fields
