"""Hot-path counters: plain ints and fixed-bucket histograms, read at scrape time.

The writer, the hub and the stream connections count into these objects with
one attribute increment (or a ``bisect`` for a histogram); nothing here
allocates, locks or imports prometheus. ``homeserver.observe.metrics`` turns them into
Prometheus series when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field


class LocalHistogram:
    """Counts per upper bound (``le``), plus the sum; cumulative only when read."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count <= le), ..., ("+Inf", total)]`` as Prometheus wants it."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


# Seconds: 50 µs .. 1 s (writer batches run in well under a millisecond; fsync ~3 ms).
LATENCY_BOUNDS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(slots=True)
class StreamStats:
    """Counters shared by every ``/v1/stream`` connection of one server."""

    opened: int = 0
    closed: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    acked_sends: int = 0
    closes_by_reason: dict[str, int] = field(default_factory=dict)

    def closed_with(self, reason: str) -> None:
        self.closed += 1
        self.closes_by_reason[reason] = self.closes_by_reason.get(reason, 0) + 1
