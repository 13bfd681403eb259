"""The cluster bus: a narrow interface, Redis behind it (coredis, native under trio).

Rules
-----
1. The bus is at most once. Nothing correct depends on a message arriving:
   events are caught up from the database, presence re-synchronises, a
   duplicate-connection close is best effort.
2. Every failure of the engine is :class:`BusError` (never a coredis type), so
   callers decide: the feed reconnects and catches up, the rate limiter falls
   back to memory, ephemeral inputs are dropped.
3. A subscription ends with :class:`BusError` when its connection is lost
   (coredis' own silent resubscribe is turned off): the subscriber then
   subscribes again *first* and catches up after, so nothing committed during
   the outage is missed.

:class:`MemoryBus` is the same interface in one process (unit tests, and the
shape a NATS or sync-redis-in-a-thread fallback would take).

Library: coredis 6.9 (pinned ``>=6.9,<7``), which runs natively under trio
(anyio). It passed everything asked of it here (pub/sub, scripts, a killed and
restarted server, ``SIGKILL``'d peers), so redis-py's sync client in a worker
thread, the documented fallback, was not needed: it would be one more class
with these methods, each ``trio.to_thread.run_sync``, and a subscription thread
feeding a memory channel. coredis 6.9 leaves a failed connection's memory
streams to the garbage collector (a ``ResourceWarning``, filtered in the tests).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import coredis
import trio
from coredis.exceptions import RedisError

Message = tuple[str, bytes]

LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class BusError(Exception):
    """The bus engine is unreachable or failed a command."""


class Bus(Protocol):
    async def publish(self, channel: str, data: bytes) -> None: ...

    def subscribe(self, *channels: str) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """Subscribed on entry; iterate ``(channel, data)``; BusError when lost."""

    async def lease(self, key: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew ``key`` for ``owner`` (``SET NX PX``, renewed by its owner)."""

    async def release(self, key: str, owner: str) -> None:
        """Delete ``key`` if ``owner`` holds it."""

    async def set_expiring(self, key: str, value: str, ttl_ms: int) -> None: ...

    async def existing(self, keys: Sequence[str]) -> list[bool]: ...

    async def hash_set(self, key: str, field: str, value: str | None) -> None:
        """``None`` deletes the field."""

    async def hash_all(self, key: str) -> dict[str, str]: ...

    async def script(self, name: str, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script (cached by ``name``)."""


class RedisBus:
    """:class:`Bus` on Redis through coredis. Use as ``async with RedisBus(url) as bus``."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._url = url
        self._timeout = timeout
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, connect_timeout=timeout, stream_timeout=timeout, decode_responses=False
        )
        self._scripts: dict[str, Any] = {}

    async def __aenter__(self) -> RedisBus:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)

    async def publish(self, channel: str, data: bytes) -> None:
        try:
            await self._client.publish(channel, data)
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"publish {channel}: {exc}") from exc

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[Message]]:
        try:
            async with self._client.pubsub(
                channels=list(channels),
                retry_policy=None,
                ignore_subscribe_messages=True,
                max_idle_seconds=max(1.0, self._timeout),
            ) as pubsub:
                yield _messages(pubsub)
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"subscription lost: {exc}") from exc
        except BaseExceptionGroup as group:  # the pubsub's own task group
            _, rest = group.split((RedisError, TimeoutError, OSError))
            if rest is not None:
                raise
            raise BusError(f"subscription lost: {group.exceptions[0]}") from group

    async def lease(self, key: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self.script("lease", LEASE, [key], [owner, ttl_ms]))

    async def release(self, key: str, owner: str) -> None:
        await self.script("release", RELEASE, [key], [owner])

    async def set_expiring(self, key: str, value: str, ttl_ms: int) -> None:
        try:
            await self._client.set(key, value, px=ttl_ms)
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"set {key}: {exc}") from exc

    async def existing(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        try:
            values = await self._client.mget(list(keys))
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"mget: {exc}") from exc
        return [v is not None for v in values]

    async def hash_set(self, key: str, field: str, value: str | None) -> None:
        try:
            if value is None:
                await self._client.hdel(key, [field])
            else:
                await self._client.hset(key, {field: value})
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"hash {key}: {exc}") from exc

    async def hash_all(self, key: str) -> dict[str, str]:
        try:
            raw = await self._client.hgetall(key)
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"hgetall {key}: {exc}") from exc
        return {_text(k): _text(v) for k, v in raw.items()}

    async def script(self, name: str, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source)
        try:
            return await script(keys=list(keys), args=list(args))
        except (RedisError, TimeoutError, OSError) as exc:
            raise BusError(f"script {name}: {exc}") from exc


async def _messages(pubsub: Any) -> AsyncIterator[Message]:
    async for message in pubsub:
        if message.get("type") == "message":
            yield _text(message["channel"]), bytes(message["data"])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MemoryBus:
    """:class:`Bus` inside one process: every subscriber gets every message.

    ``down`` makes every call fail (and ends every subscription) like a lost
    engine. Scripts are not supported (a caller's fallback path runs).
    """

    def __init__(self) -> None:
        self._subs: list[tuple[frozenset[str], trio.MemorySendChannel[Message | None]]] = []
        self._keys: dict[str, tuple[str, float]] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self.published = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise BusError("memory bus is down")

    def fail(self) -> None:
        """Drop the engine: every subscription ends with BusError; calls fail until ``restore``."""
        self.down = True
        for _, send in self._subs:
            send.send_nowait(None)
        self._subs = []

    def restore(self) -> None:
        self.down = False

    async def publish(self, channel: str, data: bytes) -> None:
        self._check()
        self.published += 1
        for channels, send in self._subs:
            if channel in channels:
                send.send_nowait((channel, data))
        await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[Message]]:
        self._check()
        send, recv = trio.open_memory_channel[Message | None](math.inf)
        entry = (frozenset(channels), send)
        self._subs.append(entry)

        async def messages() -> AsyncIterator[Message]:
            async for item in recv:
                if item is None:
                    raise BusError("memory bus went down")
                yield item

        try:
            yield messages()
        finally:
            if entry in self._subs:
                self._subs.remove(entry)

    def _live(self, key: str) -> str | None:
        item = self._keys.get(key)
        if item is None or item[1] <= trio.current_time():
            self._keys.pop(key, None)
            return None
        return item[0]

    async def lease(self, key: str, owner: str, ttl_ms: int) -> bool:
        self._check()
        current = self._live(key)
        if current not in (None, owner):
            return False
        self._keys[key] = (owner, trio.current_time() + ttl_ms / 1000)
        return True

    async def release(self, key: str, owner: str) -> None:
        self._check()
        if self._live(key) == owner:
            del self._keys[key]

    async def set_expiring(self, key: str, value: str, ttl_ms: int) -> None:
        self._check()
        self._keys[key] = (value, trio.current_time() + ttl_ms / 1000)

    async def existing(self, keys: Sequence[str]) -> list[bool]:
        self._check()
        return [self._live(k) is not None for k in keys]

    async def hash_set(self, key: str, field: str, value: str | None) -> None:
        self._check()
        table = self._hashes.setdefault(key, {})
        if value is None:
            table.pop(field, None)
        else:
            table[field] = value

    async def hash_all(self, key: str) -> dict[str, str]:
        self._check()
        return dict(self._hashes.get(key, {}))

    async def script(self, name: str, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        raise BusError("the memory bus runs no scripts")
