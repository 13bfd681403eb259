"""One rate limit across processes: a sliding-window log in Redis.

Same semantics as ``protocol.ratelimit.SlidingWindowLimiter`` (at most
``limit`` acquisitions in any rolling ``window``; a refusal records nothing
and says how long until a slot frees; ``limit == 0`` is unlimited), kept as a
sorted set per key and checked by one Lua script per acquisition on Redis's
own clock (``TIME``), so process clocks do not matter.

If Redis is unreachable the check falls back to the in-memory limiter of this
process (logged once per outage): the limit then holds per process, so the
cluster may accept up to N times it until Redis is back.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import deque

import trio

from homeserver.cluster.bus import Bus, BusError
from protocol.ratelimit import SlidingWindowLimiter

log = logging.getLogger("homeserver.cluster")

# KEYS[1] the log; ARGV limit, window (µs), a unique member suffix.
# Returns {1, member} when allowed, {0, microseconds to wait} when refused.
CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return {0, math.floor(tonumber(oldest[2]) + window - now)}
end
local member = string.format('%d', now) .. ':' .. ARGV[3]
redis.call('ZADD', KEYS[1], string.format('%d', now), member)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(window / 1000)))
return {1, member}
"""
REMEMBER = 64  # members per key this process may still refund


class RedisSlidingWindow:
    """The send limiter of ``homeserver.rooms.messages`` (``Limiter``), cluster-wide."""

    def __init__(self, bus: Bus, prefix: str) -> None:
        self._bus = bus
        self._prefix = prefix
        self._local = SlidingWindowLimiter()
        self._mine: dict[str, deque[str | None]] = {}
        self._failing = False
        self.fallbacks = 0

    def _key(self, key: str) -> str:
        return f"{self._prefix}:rl:{key}"

    async def try_acquire(self, key: str, *, limit: int, window: float) -> float:
        """0.0 when allowed (recorded), else seconds until a slot frees (nothing recorded)."""
        if limit == 0:
            return 0.0
        try:
            allowed, value = await self._bus.script(
                "ratelimit",
                CHECK,
                [self._key(key)],
                [limit, int(window * 1_000_000), secrets.token_hex(6)],
            )
        except BusError as exc:
            if not self._failing:
                log.warning("rate limit: Redis unreachable (%s); limiting in memory", exc)
            self._failing = True
            self.fallbacks += 1
            wait = self._local.try_acquire(key, trio.current_time(), limit=limit, window=window)
            if wait == 0:
                self._remember(key, None)
            return wait
        if self._failing:
            log.info("rate limit: Redis is back")
        self._failing = False
        if int(allowed) == 1:
            self._remember(key, _text(value))
            return 0.0
        return max(int(_text(value)) / 1_000_000, 1e-6)

    def _remember(self, key: str, member: str | None) -> None:
        mine = self._mine.get(key)
        if mine is None:
            if len(self._mine) > 10_000:
                self._mine.clear()
            mine = self._mine[key] = deque(maxlen=REMEMBER)
        mine.append(member)

    async def refund(self, key: str) -> None:
        """Give back this process's most recent acquisition of ``key``."""
        mine = self._mine.get(key)
        if not mine:
            return
        member = mine.pop()
        if member is None:
            self._local.refund(key)
            return
        with contextlib.suppress(BusError):
            await self._bus.script(
                "ratelimit-refund",
                "return redis.call('ZREM', KEYS[1], ARGV[1])",
                [self._key(key)],
                [member],
            )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
