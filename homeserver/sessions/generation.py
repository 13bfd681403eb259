"""One reply being generated: a small buffer of deltas that any number of readers follow.

The generation task (owned by :class:`homeserver.sessions.SessionService`, never a
request handler) appends deltas and finally ends it; readers (the SSE response of
the request that started it, re-attached streams, a non-streamed request) keep an
index into ``parts`` and wait on :meth:`Generation.wait_beyond`. So a reader
that arrives late replays what was sent so far and then continues live, and a
reader that goes away changes nothing for the generation.

A reader that can act without blocking (the direct SSE writer, which writes a delta
straight to a writable socket) may instead :meth:`Generation.listen`: its callback runs
synchronously in the generation task on every append and at the end, so a delta costs
no event and no task switch on its way to the socket. A callback must not raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from protocol.errors import ApiError
from protocol.llm import Usage


@dataclass(eq=False)
class Generation:
    session_id: str
    message_id: str
    user_message_id: str
    model: str
    created: int  # Unix seconds (the chunks' ``created``)
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ApiError | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    # Set once the reply is stored (or could not be): readers end after it.
    done: trio.Event = field(default_factory=trio.Event)
    _wake: trio.Event | None = None  # created by the first reader that waits
    _listeners: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def stored(
        cls,
        *,
        session_id: str,
        message_id: str,
        user_message_id: str,
        model: str,
        created: int,
        content: str,
        finish_reason: str,
        usage: Usage,
    ) -> Generation:
        """A finished reply read back from storage (re-attaching after it ended)."""
        gen = cls(session_id, message_id, user_message_id, model, created)
        if content:
            gen.parts.append(content)
        gen.finish_reason, gen.usage = finish_reason, usage
        gen.done.set()
        return gen

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return self.done.is_set()

    def append(self, text: str) -> None:
        self.parts.append(text)
        self._notify()

    def finish(self, reason: str, usage: Usage, error: ApiError | None = None) -> None:
        """Mark it ended (after the reply is stored) and wake every reader."""
        self.finish_reason, self.usage, self.error = reason, usage, error
        self.done.set()
        self._notify()

    def stop(self) -> None:
        """Cancel the generation task's model call (closes the upstream request)."""
        self.scope.cancel()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, in the generation task) on every change."""
        self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        if self._listeners:
            for callback in tuple(self._listeners):  # a callback may unlisten itself
                callback()

    async def wait_beyond(self, index: int, seconds: float) -> bool:
        """Wait for a part past ``index`` or the end; ``False`` after ``seconds``."""
        if len(self.parts) > index or self.finished:
            return True
        if self._wake is None:
            self._wake = trio.Event()
        wake = self._wake
        if seconds == math.inf:  # no deadline: no cancel scope to set up and tear down
            await wake.wait()
            return True
        with trio.move_on_after(seconds):
            await wake.wait()
            return True
        return False
