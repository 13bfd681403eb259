"""The single writer (group commit) and the read pool.

Writer rules
------------
1. One task owns the write connection. Every write is a sync function
   ``fn(conn, *args)`` submitted with :meth:`Writer.write`.
2. The writer takes every job waiting at that moment (up to ``max_batch``),
   runs each inside its own SAVEPOINT of one ``BEGIN IMMEDIATE`` transaction in
   a worker thread, and commits once. A job that raises is rolled back alone;
   the others still commit.
3. A caller is answered only after the commit that holds its write.
4. After each commit the writer reads back every event the batch stored and
   hands them, in ``stream_position`` order, to ``on_commit`` (the hub) before
   answering anyone: persist, then publish.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

import outcome
import trio

from protocol.events import Event
from storage import db, migrate
from storage import events as event_store

T = TypeVar("T")
P = ParamSpec("P")

OnCommit = Callable[[Sequence[Event]], None]


@dataclass(slots=True)
class _Job(Generic[T]):
    fn: Callable[..., T]
    args: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    jobs: int = 0
    largest_batch: int = 0
    failed_commits: int = 0


class Writer:
    """Owns the write connection; serialises and batches every write."""

    def __init__(self, path: str | Path, *, synchronous: str, max_batch: int) -> None:
        self._path = str(path)
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[_Job[Any]](max_batch * 64)
        self._conn: sqlite3.Connection | None = None
        self._on_commit: OnCommit = lambda events: None
        self.published_position = 0
        self.stats = WriterStats()

    @property
    def path(self) -> str:
        return self._path

    def set_on_commit(self, callback: OnCommit) -> None:
        self._on_commit = callback

    def open(self) -> int:
        """Open and migrate the database; return the current stream position."""
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = db.connect(self._path, synchronous=self._synchronous)
        migrate.migrate(self._conn)
        self.published_position = event_store.max_position(self._conn)
        return self.published_position

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the next batch; return after its commit.

        Raises whatever ``fn`` raised (its savepoint rolled back), or
        ``sqlite3.Error`` if the commit itself failed.
        """
        job: _Job[T] = _Job(fn, args)
        await self._send.send(job)
        await job.done.wait()
        assert job.result is not None
        return job.result.unwrap()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._conn is None:
            self.open()
        task_status.started()
        while True:
            batch: list[_Job[Any]] = [await self._recv.receive()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            # Never abandon a batch half-way: a commit in flight finishes even
            # when the server is shutting down, so an acknowledged write is durable.
            with trio.CancelScope(shield=True):
                committed = await trio.to_thread.run_sync(self._run_batch, batch)
                self._finish(batch, committed)

    def _finish(self, batch: list[_Job[Any]], committed: list[Event]) -> None:
        self.stats.batches += 1
        self.stats.jobs += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        if committed:
            self.published_position = committed[-1].stream_position
            self._on_commit(committed)
        for job in batch:
            job.done.set()

    def _run_batch(self, batch: list[_Job[Any]]) -> list[Event]:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            conn.execute("SAVEPOINT job")
            try:
                value = job.fn(conn, *job.args)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                job.result = outcome.Error(exc)
            else:
                job.result = outcome.Value(value)
            conn.execute("RELEASE job")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.stats.failed_commits += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.result = outcome.Error(exc)
            return []
        return event_store.events_after(conn, self.published_position)

    def checkpoint(self) -> bool:
        """Fold the WAL back into the database file; False if readers blocked part of it."""
        assert self._conn is not None
        busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0


class Readers:
    """A small pool of read connections used from worker threads."""

    def __init__(self, path: str | Path, *, size: int) -> None:
        self._path = str(path)
        self._size = size
        self._free: list[sqlite3.Connection] = []
        self._limiter = trio.CapacityLimiter(size)

    def open(self) -> None:
        self._free = [db.connect(self._path, readonly=True) for _ in range(self._size)]

    def close(self) -> None:
        for conn in self._free:
            conn.close()
        self._free = []

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a read connection in a worker thread."""
        async with self._limiter:
            conn = self._free.pop()
            try:
                return await trio.to_thread.run_sync(self._run, conn, fn, args)
            finally:
                self._free.append(conn)

    @staticmethod
    def _run(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # Each read sees one consistent snapshot.
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("ROLLBACK")


class WalScrubber:
    """Folds the WAL into the database file soon after a redaction.

    A redaction rewrites rows, but until a checkpoint the erased text still sits
    in old WAL frames. This task runs ``wal_checkpoint(TRUNCATE)`` on its own
    connection (short busy timeout, so it never stalls the writer for long) and
    retries while readers hold old snapshots.
    """

    def __init__(self, path: str | Path, *, retry_every: float = 0.5, attempts: int = 20) -> None:
        self._path = str(path)
        self._retry_every = retry_every
        self._attempts = attempts
        self._wanted = trio.Event()
        self._scrubbed = trio.Event()
        self.scrubs = 0
        self.failures = 0

    def request(self) -> None:
        self._wanted.set()

    async def wait_scrubs(self, count: int) -> None:
        """Return once ``count`` scrubs have completed in all."""
        while self.scrubs < count:
            await self._scrubbed.wait()

    def _checkpoint(self) -> bool:
        conn = db.connect(self._path)
        try:
            conn.execute("PRAGMA busy_timeout = 100")
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return int(busy) == 0
        finally:
            conn.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            for _ in range(self._attempts):
                try:
                    done = await trio.to_thread.run_sync(self._checkpoint)
                except sqlite3.Error:
                    done = False
                if done:
                    self.scrubs += 1
                    self._scrubbed.set()
                    self._scrubbed = trio.Event()
                    break
                await trio.sleep(self._retry_every)
            else:
                self.failures += 1
