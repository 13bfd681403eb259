"""``POST /chat`` on the listener's fast path (homeserver/http/direct.py).

A widget chat is one SSE stream per visitor message, an event per token: at 300 open
chats that is thousands of events a second, and through Quart and hypercorn each one costs
a response-body generator step and their per-stream wrappers (bench/RESULTS.md, ScaiBot).
Here the request is parsed by the fast path, the same calls as the Quart route are made
(:meth:`Callers.chat_caller`, :meth:`ChatService.open_turn`, then
:meth:`ChatService.stream`), and every event the stream yields is written to the socket as
one chunk (:func:`homeserver.http.sse_socket.write_events`). A visitor who goes away ends
the stream the way the Quart route's cancellation does: the answer so far is stored with
``finish_reason: "cancelled"``.

A body that is not a valid chat request (not JSON, a field missing or wrong, a bad
``include_system_prompt``) goes to the Quart route, which answers it exactly as before
(the credential first, then the body). Refusals after that (the credential, the bot, rate
limits) are the usual JSON envelope.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from homeserver.http.direct import Exchange, Outcome, Request, Target
from homeserver.http.sse_socket import write_events
from homeserver.modules.scaibot.access import Callers
from homeserver.modules.scaibot.chat import ChatService
from homeserver.modules.scaibot.routes_chat import chat_request
from homeserver.modules.scaibot.turn import ChatRequest
from protocol.errors import ApiError
from protocol.validation import parse_json_body

FLAG = "include_system_prompt"


class DirectChat:
    """The route, mounted where the module's blueprint is (``prefix``)."""

    def __init__(self, callers: Callers, chat: ChatService, *, limit: int, prefix: str) -> None:
        self._callers = callers
        self._chat = chat
        self._limit = limit
        self.route = prefix + "/chat"
        self._segments = self.route.encode().split(b"/")

    def match(self, method: bytes, segments: list[bytes], query: bytes) -> Target | None:
        if method == b"POST" and segments == self._segments:
            return Target("POST", self.route, (), query)
        return None

    def prepare(self, request: Request) -> ChatRequest | None:
        try:
            body = parse_json_body(request.body, max_bytes=self._limit, family="bot")
            return chat_request(body, _first(request.target.query, FLAG))
        except ApiError:
            return None

    async def respond(self, exchange: Exchange, wanted: ChatRequest) -> Outcome:
        try:
            who = await self._callers.chat_caller(exchange.request.bearer)
            turn = await self._chat.open_turn(who, wanted)
        except Exception as exc:
            return await exchange.refuse(exc, "bot")
        complete, leftover = await write_events(
            exchange.conn, exchange.sse_head(), self._chat.stream(turn)
        )
        return exchange.next(leftover) if complete else Outcome("close")


def _first(query: bytes, name: str) -> str | None:
    """A query parameter's first value, decoded as the HTTP server decodes it."""
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == name:
            return value
    return None
