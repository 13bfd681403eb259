"""Rolling-window rate limiting, sans-I/O: the caller passes the clock in as ``now``.

Semantics (CONTRACT section 7, reference notes Q-M5)
----------------------------------------------------
:class:`SlidingWindowLimiter` implements an exact sliding-window log. An
acquisition for ``key`` at time ``now`` is allowed when fewer than ``limit``
acquisitions of that key were allowed in the half-open interval
``(now - window, now]``. Hence in *every* half-open interval ``[t, t + window)``
at most ``limit`` acquisitions are allowed — "N messages per rolling window",
with no boundary bursts. A refused acquisition records nothing and reports the
seconds until enough counted acquisitions leave the window (the oldest of
them at ``oldest + window``), which is what ``Retry-After`` carries.

Why not GCRA: GCRA/token-bucket with emission interval ``window/limit`` and a
burst of ``limit`` keeps one float per key but allows up to ``2*limit - 1``
in some window-length intervals (a full burst, then one more every
``window/limit``), so it does not give the rolling-window guarantee.

Memory: per key at most ``limit`` timestamps (a deque trimmed to the most
recent ``limit``); keys whose newest timestamp has left its window are
dropped by :meth:`SlidingWindowLimiter.prune`, which also runs
opportunistically from :meth:`~SlidingWindowLimiter.try_acquire` (amortised
O(1) per call). Memory is therefore O(active keys x limit).

``now`` must come from a monotonic clock (non-decreasing per key).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["SlidingWindowLimiter", "retry_after_seconds"]


@dataclass(slots=True)
class _Log:
    window: float
    stamps: deque[float] = field(default_factory=deque)

    def expire(self, now: float) -> None:
        cutoff = now - self.window
        stamps = self.stamps
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()


@dataclass
class SlidingWindowLimiter:
    """At most ``limit`` acquisitions per key in any rolling ``window`` seconds.

    ``prune_every``: how many calls between opportunistic prunes (at least
    twice the keys that survived the last prune, so pruning stays amortised
    O(1)). Idle keys therefore number at most about
    ``max(prune_every, 2 * active keys)``.
    """

    prune_every: int = 1024
    _logs: dict[str, _Log] = field(default_factory=dict, init=False, repr=False)
    _allowed: int = field(default=0, init=False, repr=False)
    _refused: int = field(default=0, init=False, repr=False)
    _since_prune: int = field(default=0, init=False, repr=False)
    _next_prune: int = field(default=0, init=False, repr=False)

    def try_acquire(self, key: str, now: float, *, limit: int, window: float) -> float:
        """Take one slot for ``key`` at ``now``.

        Returns ``0.0`` when allowed (and records it), otherwise the seconds
        (> 0) until a slot frees (and records nothing). ``limit == 0`` means
        unlimited: always allowed, nothing recorded.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            self._allowed += 1
            return 0.0
        if not window > 0:
            raise ValueError("window must be > 0")
        self._maybe_prune(now)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log(window)
        log.window = window
        log.expire(now)
        stamps = log.stamps
        if len(stamps) >= limit:
            # The acquisition becomes possible once all but limit-1 of the
            # counted stamps have expired: at stamps[len - limit] + window.
            wait = stamps[len(stamps) - limit] + window - now
            self._refused += 1
            return max(wait, 1e-9)
        stamps.append(now)
        while len(stamps) > limit:  # limit may have shrunk since the last call
            stamps.popleft()
        self._allowed += 1
        return 0.0

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune >= max(self.prune_every, self._next_prune):
            self.prune(now)

    def prune(self, now: float) -> int:
        """Drop keys with no acquisition inside their window; returns how many."""
        self._since_prune = 0
        stale = [
            key
            for key, log in self._logs.items()
            if not log.stamps or log.stamps[-1] <= now - log.window
        ]
        for key in stale:
            del self._logs[key]
        # Wait at least twice the surviving keys before the next opportunistic
        # prune, so its O(keys) cost stays amortised O(1) per call.
        self._next_prune = 2 * len(self._logs)
        return len(stale)

    def refund(self, key: str) -> None:
        """Give back the most recent acquisition of ``key`` (its request was refused later)."""
        log = self._logs.get(key)
        if log is not None and log.stamps:
            log.stamps.pop()
            self._allowed -= 1

    def reset(self, key: str) -> None:
        """Forget everything recorded for ``key``."""
        self._logs.pop(key, None)

    def statistics(self) -> dict[str, int]:
        """Counters: keys tracked, timestamps held, acquisitions allowed and refused."""
        return {
            "keys": len(self._logs),
            "stamps": sum(len(log.stamps) for log in self._logs.values()),
            "allowed": self._allowed,
            "refused": self._refused,
        }


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for ``Retry-After``: ``wait`` rounded up, at least 1."""
    return max(1, math.ceil(wait))
