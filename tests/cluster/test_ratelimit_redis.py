"""The cluster send limit on a real Redis: the sliding-window semantics of
protocol.ratelimit (one Lua script per check, Redis's clock), refunds, and the
in-memory fallback while Redis is unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from homeserver.cluster.bus import RedisBus
from homeserver.cluster.ratelimit import RedisSlidingWindow
from tests.cluster.harness import RedisServer, redis_server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


async def test_window_refund_and_fallback(redis: RedisServer) -> None:
    async with RedisBus(redis.url, timeout=0.5) as bus:
        one, two = RedisSlidingWindow(bus, "hs:t"), RedisSlidingWindow(bus, "hs:t")
        assert await one.try_acquire("alice", limit=3, window=0.5) == 0
        assert await two.try_acquire("alice", limit=3, window=0.5) == 0  # another process
        assert await one.try_acquire("alice", limit=3, window=0.5) == 0
        wait = await two.try_acquire("alice", limit=3, window=0.5)
        assert 0 < wait <= 0.5
        assert await one.try_acquire("bob", limit=3, window=0.5) == 0  # per key
        await one.refund("alice")
        assert await two.try_acquire("alice", limit=3, window=0.5) == 0
        assert await two.try_acquire("alice", limit=3, window=0.5) > 0
        await trio.sleep(0.6)  # the window rolls on (Redis TIME)
        assert await one.try_acquire("alice", limit=3, window=0.5) == 0
        assert await one.try_acquire("carol", limit=0, window=0.5) == 0  # unlimited

        redis.stop()
        for _ in range(2):
            assert await one.try_acquire("dave", limit=2, window=60) == 0
        assert await one.try_acquire("dave", limit=2, window=60) > 0  # this process's memory
        await one.refund("dave")
        assert await one.try_acquire("dave", limit=2, window=60) == 0
        assert one.fallbacks == 4
        redis.start()
        assert await one.try_acquire("dave", limit=2, window=60) == 0  # Redis again
