"""Prometheus metrics: one :class:`Metrics` (with its own registry) per server.

Two kinds of series:

- **Counted on the hot path into plain ints** (homeserver.observe.stats, the writer's
  and the hub's stats) and read only when ``/metrics`` is scraped, by
  :class:`_ServerCollector`: stream connections, frames and bytes sent,
  slow-consumer closes, acked sends, writer batch size/latency, fsync latency,
  rate-limit refusals. The send path never calls prometheus_client.
- **prometheus_client objects** for what happens per HTTP request or per AI
  generation (far off the delivery path): HTTP requests by route and status,
  request duration, and the AI series (generations in flight, time to first
  token, upstream errors by code), which the AI modules record into through
  the ``Metrics`` object they are given.

A dedicated ``CollectorRegistry`` (never the process-global default), so tests
that start several servers in one process each see their own counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from homeserver.observe.stats import LocalHistogram, StreamStats

if TYPE_CHECKING:
    from homeserver.live.hub import Hub
    from homeserver.store.database import WriterStats

HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TTFT_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


class Metrics:
    """Every metric of one server, and its registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "homeserver_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "homeserver_http_request_duration_seconds",
            "Time from request start to response, by method and route template.",
            ["method", "route"],
            buckets=HTTP_SECONDS,
            registry=r,
        )
        # AI (issues 10+): recorded by the model and ScaiBot modules.
        self.generations_in_flight = Gauge(
            "homeserver_ai_generations_in_flight",
            "Model generations currently streaming.",
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "homeserver_ai_time_to_first_token_seconds",
            "Seconds from a generation's request to its first token.",
            buckets=TTFT_SECONDS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "homeserver_ai_upstream_errors",
            "Errors from model backends, by error code.",
            ["code"],
            registry=r,
        )

    def watch(
        self,
        *,
        hub: Hub,
        writer: WriterStats,
        stream: StreamStats,
        rate_limited: Callable[[], Mapping[str, int]],
    ) -> None:
        """Expose the server's hot-path counters (read at scrape time)."""
        self.registry.register(_ServerCollector(hub, writer, stream, rate_limited))

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of a scrape."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _histogram(name: str, doc: str, h: LocalHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


class _ServerCollector(Collector):
    def __init__(
        self,
        hub: Hub,
        writer: WriterStats,
        stream: StreamStats,
        rate_limited: Callable[[], Mapping[str, int]],
    ) -> None:
        self._hub = hub
        self._writer = writer
        self._stream = stream
        self._rate_limited = rate_limited

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no fixed description: collected fresh each scrape

    def collect(self) -> Iterator[Metric]:
        hub, w, s = self._hub, self._writer, self._stream
        yield GaugeMetricFamily(
            "homeserver_stream_connections_open",
            "Stream connections attached to the hub.",
            value=hub.connection_count(),
        )
        yield CounterMetricFamily(
            "homeserver_stream_connections_opened",
            "Stream connections authenticated and started.",
            value=s.opened,
        )
        closed = CounterMetricFamily(
            "homeserver_stream_connections_closed",
            "Stream connections ended, by who ended them and why.",
            labels=["reason"],
        )
        for reason, count in sorted(s.closes_by_reason.items()):
            closed.add_metric([reason], count)
        yield closed
        yield CounterMetricFamily(
            "homeserver_stream_frames_sent",
            "WebSocket data frames queued to stream connections.",
            value=s.frames_sent,
        )
        yield CounterMetricFamily(
            "homeserver_stream_bytes_sent",
            "Bytes written to stream sockets.",
            value=s.bytes_sent,
        )
        yield CounterMetricFamily(
            "homeserver_stream_slow_consumer_closes",
            "Stream connections closed because their outbox overflowed.",
            value=hub.stats.slow_consumers,
        )
        yield CounterMetricFamily(
            "homeserver_stream_acked_sends",
            "Messages sent over the stream and acknowledged.",
            value=s.acked_sends,
        )
        yield CounterMetricFamily(
            "homeserver_hub_events_published",
            "Committed events published to the hub.",
            value=hub.stats.events,
        )
        yield CounterMetricFamily(
            "homeserver_hub_deliveries",
            "Event deliveries (one per event per connection).",
            value=hub.stats.deliveries,
        )
        yield _histogram(
            "homeserver_writer_batch_size", "Jobs per writer transaction.", w.batch_sizes
        )
        yield _histogram(
            "homeserver_writer_batch_seconds",
            "Seconds to execute and commit one writer transaction.",
            w.batch_seconds,
        )
        yield _histogram(
            "homeserver_writer_fsync_seconds",
            "Seconds per WAL fsync (durability full).",
            w.fsync_seconds,
        )
        yield CounterMetricFamily(
            "homeserver_writer_failed_commits",
            "Writer transactions whose COMMIT failed.",
            value=w.failed_commits,
        )
        refusals = CounterMetricFamily(
            "homeserver_rate_limit_refusals",
            "Requests refused by a rate limit, by limit.",
            labels=["limit"],
        )
        for limit, count in sorted(self._rate_limited().items()):
            refusals.add_metric([limit], count)
        yield refusals
