"""Coalesced ``swp.room.message.chunk`` frames: at most one per interval per draft.

Text arriving while a frame was sent less than ``interval`` ago waits in a
buffer; a small flusher task sends it when the interval is up (so a stalled
model does not hold back the last words). ``seq`` counts frames from 0.

The flusher sleeps on shared millisecond timers (``bridges.ticks.Ticks``, passed
in as ``sleep_until``): drafts started together flush in the same tick, and one
timer then wakes them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Send = Callable[[dict[str, Any]], None]
FrameFor = Callable[[int, str], dict[str, Any]]
SleepUntil = Callable[[float], Awaitable[None]]


class ChunkStream:
    def __init__(
        self,
        send: Send,
        frame_for: FrameFor,
        *,
        interval: float,
        sleep_until: SleepUntil = trio.sleep_until,
    ) -> None:
        self._send = send
        self._frame_for = frame_for
        self._interval = interval
        self._sleep_until = sleep_until
        self._pending: list[str] = []
        self._parts: list[str] = []
        self._last = -float("inf")
        self._wake = trio.Event()
        self.seq = 0

    @property
    def text(self) -> str:
        """Everything added so far, sent or not."""
        return "".join(self._parts)

    def add(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._pending.append(text)
        if trio.current_time() >= self._last + self._interval:
            self.flush()
        else:
            self._wake.set()

    def flush(self) -> None:
        """Send what is pending now, as one frame."""
        if not self._pending:
            return
        delta = "".join(self._pending)
        self._pending.clear()
        self._send(self._frame_for(self.seq, delta))
        self.seq += 1
        self._last = trio.current_time()

    async def run_flusher(self) -> None:
        """Send held-back text once its interval is up; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._sleep_until(self._last + self._interval)
            self.flush()
