"""Shared millisecond timers: many tasks sleeping until about the same time, one trio timer.

A trio timer is a cancel scope whose deadline expires; its expiry (cancel, abort,
``Cancelled`` raised and caught) costs about 30-40 us of CPU on this machine kind. A
server with hundreds of paced streams (dev/echo's pacing, the SSE writer's coalescing
window) fires thousands a second. :class:`Ticks` rounds each deadline up to the
millisecond and lets every task due in the same millisecond wait on one event set
by one sleeper (bench/RESULTS.md, sessions).
"""

from __future__ import annotations

import math

import trio


class Ticks:
    """Sleep until a deadline rounded up to the millisecond, one trio timer per tick.

    The first sleeper for a tick sleeps; the others wait on its event. If that first
    sleeper is cancelled it still sets the event, and anyone woken early sleeps again.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, trio.Event] = {}

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def sleep_until(self, deadline: float) -> None:
        tick = math.ceil(deadline * 1000 - 1e-6)  # float noise must not add a millisecond
        due = tick / 1000  # trio.sleep_until(due) returns only once current_time() >= due
        if trio.current_time() >= due:
            await trio.lowlevel.checkpoint()
            return
        while trio.current_time() < due:
            event = self._waiting.get(tick)
            if event is not None:
                await event.wait()
                continue
            event = self._waiting[tick] = trio.Event()
            try:
                await trio.sleep_until(due)
            finally:
                del self._waiting[tick]
                event.set()
