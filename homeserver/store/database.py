"""The store seam: what every service writes and reads through, on either engine.

``Writer`` and ``Readers`` are protocols; the services are typed against them
and never see which engine is behind:

- ``homeserver.store.sqlite``: the embedded default (group commit on the trio
  thread, a syncer thread for the fsync, a checkpointer that scrubs the WAL);
- ``homeserver.store.postgres``: ``[cluster] database_url`` (group commit on a
  writer thread through psycopg 3's sync driver, a pool of read connections).

Jobs are sync functions ``fn(conn, *args)`` of the ``storage`` layer on both.
Each batch is one transaction with a SAVEPOINT per job (a job that raises is
rolled back alone); stream positions come from the ``stream_head`` row inside
that transaction (``storage.events.next_position_txn``), so they are gapless
and in commit order. After the commit is durable, ``on_commit`` gets the
batch's events in position order, and only then are the callers answered:
persist, then publish, then acknowledge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import outcome
import trio

from homeserver.observe.stats import BATCH_SIZE_BOUNDS, LATENCY_BOUNDS, LocalHistogram
from protocol.events import Event

T = TypeVar("T")

OnCommit = Callable[[Sequence[Event]], None]
FILL_BELOW = 8  # batches smaller than this wait one scheduler tick for company


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    jobs: int = 0
    largest_batch: int = 0
    failed_commits: int = 0
    fsyncs: int = 0
    # Read at scrape time (homeserver.observe.metrics): jobs per batch, seconds per batch
    # (execute + COMMIT), seconds per WAL fsync (SQLite's syncer).
    batch_sizes: LocalHistogram = field(default_factory=lambda: LocalHistogram(BATCH_SIZE_BOUNDS))
    batch_seconds: LocalHistogram = field(default_factory=lambda: LocalHistogram(LATENCY_BOUNDS))
    fsync_seconds: LocalHistogram = field(default_factory=lambda: LocalHistogram(LATENCY_BOUNDS))


class Writer(Protocol):
    """The single writer of one process (group commit)."""

    published_position: int
    stats: WriterStats

    def open(self) -> int:
        """Connect and migrate; return the current stream head position."""
        ...

    def close(self) -> None: ...

    def set_on_commit(self, callback: OnCommit) -> None: ...

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the next batch; return once it is durable."""
        ...

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


class Readers(Protocol):
    """A small pool of read connections; each read sees one snapshot."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a read connection in a worker thread."""
        ...


class Scrubber(Protocol):
    """What a redaction asks of the engine so erased text leaves the disk."""

    scrubs: int

    def request(self) -> None: ...

    async def wait_scrubs(self, count: int) -> None: ...

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


@dataclass(slots=True)
class Job(Generic[T]):
    fn: Callable[..., T]
    args: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None


class GroupCommit:
    """The batching loop both writers share; subclasses commit one batch."""

    def __init__(self, *, max_batch: int) -> None:
        self._max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[Job[Any]](max_batch * 64)
        self._on_commit: OnCommit = lambda events: None
        self.published_position = 0
        self.stats = WriterStats()

    def set_on_commit(self, callback: OnCommit) -> None:
        self._on_commit = callback

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the next batch; return once it is durable.

        Raises whatever ``fn`` raised (its savepoint rolled back), or
        ``sqlite3.Error`` if the commit itself failed.
        """
        job: Job[T] = Job(fn, args)
        await self._send.send(job)
        await job.done.wait()
        assert job.result is not None
        return job.result.unwrap()

    def open(self) -> int:
        raise NotImplementedError

    async def _started(self, nursery: trio.Nursery) -> None:
        """Start helper tasks (SQLite: the syncer) before the first batch."""

    async def _commit(self, batch: list[Job[Any]]) -> None:
        """Run and commit ``batch``; answer its jobs once durable and published."""
        raise NotImplementedError

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._is_open():
            self.open()
        async with trio.open_nursery() as nursery:
            await self._started(nursery)
            task_status.started()
            while True:
                batch: list[Job[Any]] = [await self._recv.receive()]
                self._drain_into(batch)
                if len(batch) < FILL_BELOW:
                    # Let the callers that were just answered submit their next
                    # write, so it joins this commit instead of the next one.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    self._drain_into(batch)
                started = time.perf_counter()
                await self._commit(batch)
                stats = self.stats
                stats.batch_seconds.observe(time.perf_counter() - started)
                stats.batch_sizes.observe(len(batch))
                stats.batches += 1
                stats.jobs += len(batch)
                stats.largest_batch = max(stats.largest_batch, len(batch))

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _drain_into(self, batch: list[Job[Any]]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    def _publish(self, events: list[Event], jobs: list[Job[Any]]) -> None:
        """Hand committed events to ``on_commit`` in order, then answer the callers."""
        if events:
            self.published_position = events[-1].stream_position
            self._on_commit(events)
        for job in jobs:
            job.done.set()


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class ReaderPool(Generic[C]):
    """A fixed pool of read connections used from worker threads (both engines).

    ``connect()`` opens one read connection; ``snapshot(conn, fn, args)`` runs
    ``fn`` in one consistent snapshot on that connection, in the worker thread.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        snapshot: Callable[[C, Callable[..., Any], tuple[Any, ...]], Any],
        *,
        size: int,
    ) -> None:
        self._connect = connect
        self._snapshot = snapshot
        self._size = size
        self._free: list[C] = []
        self._limiter = trio.CapacityLimiter(size)

    def open(self) -> None:
        self._free = [self._connect() for _ in range(self._size)]

    def close(self) -> None:
        for conn in self._free:
            conn.close()
        self._free = []

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a read connection in a worker thread."""
        async with self._limiter:
            conn = self._free.pop()
            try:
                result: T = await trio.to_thread.run_sync(self._snapshot, conn, fn, args)
                return result
            finally:
                self._free.append(conn)
