"""One process of a cluster: the bus, the feed, ephemeral state, limits, connections.

Built by the composition root (homeserver.app) when ``[cluster] bus_url`` is
set; the pieces replace their one-process twins (the hub's feed, the presence
and typing services, the send limiter, the connection registry, the AI
runner's index of AI participants) and
:meth:`ClusterNode.run` runs their tasks. Channels and keys are prefixed
``hs:{tenant_id}``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from conf import Settings
from homeserver.clock import WallClock
from homeserver.cluster.ai_index import ClusterAiIndex
from homeserver.cluster.bus import Bus, RedisBus
from homeserver.cluster.connections import ClusterRegistry
from homeserver.cluster.ephemeral import ClusterEphemeral, ClusterPresence, ClusterTyping
from homeserver.cluster.feed import ClusterFeed
from homeserver.cluster.ratelimit import RedisSlidingWindow
from homeserver.live.ephemeral import TypesOf
from homeserver.live.hub import Hub
from homeserver.store.database import Readers
from protocol.events import Event
from storage import events as event_store

READ_CHUNK = 500


def node_id_of(settings: Settings) -> str:
    return settings.cluster.node_id or f"node-{secrets.token_hex(4)}"


class ClusterNode:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        hub: Hub,
        readers: Readers,
        *,
        applied: int,
        clock: WallClock,
    ) -> None:
        self.node_id = node_id_of(settings)
        prefix = f"hs:{settings.tenant_id}"
        self.bus = bus

        async def read_range(after: int, upto: int) -> list[Event]:
            limit = max(1, min(upto - after, READ_CHUNK))
            events = await readers.read(
                lambda conn: event_store.events_after(conn, after, limit=limit)
            )
            return [e for e in events if e.stream_position <= upto]

        async def read_head() -> int:
            return await readers.read(event_store.head_position)

        self.feed = ClusterFeed(
            bus,
            hub,
            node_id=self.node_id,
            channel=f"{prefix}:events",
            read_range=read_range,
            read_head=read_head,
            applied=applied,
        )
        self.ephemeral = ClusterEphemeral(
            bus,
            hub,
            node_id=self.node_id,
            prefix=prefix,
            liveness=settings.cluster.liveness_seconds,
        )
        self.limiter = RedisSlidingWindow(bus, prefix)
        self.registry = ClusterRegistry(bus, node_id=self.node_id, prefix=prefix, clock=clock)
        self.ai_index = ClusterAiIndex(bus, readers, node_id=self.node_id, prefix=prefix)

    def presence(self, types_of: TypesOf, **kwargs: Any) -> ClusterPresence:
        """This node's presence service (built by the composition root, run by :meth:`run`)."""
        built = ClusterPresence(
            self.ephemeral.sender, types_of, inputs=self.ephemeral.inputs, **kwargs
        )
        self.ephemeral.presence = built
        return built

    def typing(self, **kwargs: Any) -> ClusterTyping:
        """This node's typing service (built by the composition root, run by :meth:`run`)."""
        built = ClusterTyping(self.ephemeral.sender, inputs=self.ephemeral.inputs, **kwargs)
        self.ephemeral.typing = built
        return built

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(_ClusterCollector(self))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.feed.run)
                await nursery.start(self.ephemeral.run)
                await nursery.start(self.registry.run)
                await nursery.start(self.ai_index.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.ephemeral.say_goodbye()

    def statistics(self) -> dict[str, int]:
        return {
            **{f"feed_{k}": v for k, v in self.feed.statistics().items()},
            "leader": int(self.ephemeral.lease.is_leader),
            "dropped_nodes": self.ephemeral.dropped_nodes,
            "rate_limit_fallbacks": self.limiter.fallbacks,
            "remote_duplicate_closes": self.registry.remote_closes,
        }


class _ClusterCollector(Collector):
    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        feed = self._node.feed
        yield GaugeMetricFamily(
            "homeserver_cluster_feed_lag",
            "Positions known committed but not yet applied to this process's hub",
            value=feed.lag,
        )
        yield GaugeMetricFamily(
            "homeserver_cluster_feed_applied",
            "Last position applied to the hub",
            value=feed.applied,
        )
        yield GaugeMetricFamily(
            "homeserver_cluster_leader",
            "1 while this process holds the presence/typing lease",
            value=int(self._node.ephemeral.lease.is_leader),
        )
        for name in ("gaps", "caught_up_events", "reconnects", "publish_failures", "head_checks"):
            yield CounterMetricFamily(
                f"homeserver_cluster_feed_{name}",
                f"Cluster feed: {name.replace('_', ' ')}",
                value=getattr(feed.stats, name),
            )


@asynccontextmanager
async def open_bus(url: str) -> AsyncIterator[Bus]:
    async with RedisBus(url) as bus:
        yield bus
