"""Coalesced ``swp.room.message.chunk`` frames: at most one per interval per draft.

Text arriving while a frame was sent less than ``interval`` ago waits in a
buffer; a small flusher task sends it when the interval is up (so a stalled
model does not hold back the last words). ``seq`` counts frames from 0.

Drafts started in the same tick (50 AIs mentioned in one message) would flush
in the same tick forever after, one burst of work per interval that a normal
message arriving then waits behind. :class:`Phases` hands each new draft one of
a few phase slots: its second frame waits that much longer than the interval,
so the drafts' flushes fall in ``slots`` groups spread over the interval
(bench/RESULTS.md, "AI rooms: what the tail was made of"). Frames are never
closer than the interval.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Send = Callable[[dict[str, Any]], None]
FrameFor = Callable[[int, str], dict[str, Any]]
SleepUntil = Callable[[float], Awaitable[None]]

PHASE_SLOTS = 5


class Phases:
    """Round-robin phase slots for new drafts: slot k of n delays by k/n of the interval."""

    def __init__(self, slots: int = PHASE_SLOTS) -> None:
        self._slots = max(1, slots)
        self._next = 0

    def next(self, interval: float) -> float:
        slot = self._next
        self._next = (slot + 1) % self._slots
        return interval * slot / self._slots


class ChunkStream:
    def __init__(
        self,
        send: Send,
        frame_for: FrameFor,
        *,
        interval: float,
        phase: float = 0.0,
        sleep_until: SleepUntil = trio.sleep_until,
    ) -> None:
        self._send = send
        self._frame_for = frame_for
        self._interval = interval
        self._phase = phase  # added once, after the first frame
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
        self._last = trio.current_time()
        if self.seq == 0:
            self._last += self._phase
        self.seq += 1

    async def run_flusher(self) -> None:
        """Send held-back text once its interval is up; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._sleep_until(self._last + self._interval)
            self.flush()
