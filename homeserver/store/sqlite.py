"""SQLite store: the single writer (group commit), the syncer, the checkpointer, the read pool.

Writer rules
------------
1. One task owns the write connection. Every write is a sync function
   ``fn(conn, *args)`` submitted with :meth:`Writer.write`.
2. The writer takes every job waiting at that moment (up to ``max_batch``),
   runs each inside its own SAVEPOINT of one ``BEGIN IMMEDIATE`` transaction,
   and commits once. A job that raises is rolled back alone; the others still
   commit.
3. Batches run on the trio thread. SQLite work holds the GIL anyway, so a
   worker thread only added a hand-off and GIL contention (measured: 8 % of
   samples in the wake-up alone). What waits on the disk stays off the loop:
   the connection commits with ``synchronous=NORMAL`` (no fsync at commit)
   and never checkpoints by itself (``wal_autocheckpoint=0``).
4. Durability ``full``: a committed batch is acknowledged only after the
   syncer has fsynced the WAL in a worker thread. One fsync covers every
   batch committed before it, and the next batch runs while it is on disk
   (pipelined group commit). Durability ``normal``: no fsync; a commit
   survives a crash of the process, not of the machine.
5. After the fsync, the syncer hands the batch's events, in
   ``stream_position`` order, to ``on_commit`` (the hub) and only then answers
   the callers: persist, then publish, then acknowledge.
6. The checkpointer folds the WAL into the database file from its own
   connection: PASSIVE every few seconds, TRUNCATE on request (after a
   redaction, so erased text leaves the WAL file too).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from homeserver.store.database import GroupCommit, Job, ReaderPool
from protocol.events import Event
from storage import db, migrate
from storage import events as event_store

T = TypeVar("T")


@dataclass(slots=True)
class _Committed:
    jobs: list[Job[Any]]
    events: list[Event]


class SqliteWriter(GroupCommit):
    """Owns the write connection; serialises and batches every write."""

    def __init__(self, path: str | Path, *, synchronous: str, max_batch: int) -> None:
        super().__init__(max_batch=max_batch)
        self._path = str(path)
        self._durable = synchronous == "full"
        self._to_sync, self._syncing = trio.open_memory_channel[_Committed](max_batch * 64)
        self._conn: db.Connection | None = None

    @property
    def path(self) -> str:
        return self._path

    def open(self) -> int:
        """Open and migrate the database; return the current stream position."""
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = db.connect(self._path, synchronous="normal")
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        # When a checkpoint lets the WAL restart, cut the file back to this size.
        self._conn.execute("PRAGMA journal_size_limit = 67108864")
        migrate.migrate(self._conn)
        self._sync_wal(directory=True)  # the WAL and its directory entry are durable
        self.published_position = event_store.head_position(self._conn)
        return self.published_position

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _is_open(self) -> bool:
        return self._conn is not None

    async def _started(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run_syncer)

    async def _commit(self, batch: list[Job[Any]]) -> None:
        events = self._run_batch(batch)
        self._to_sync.send_nowait(_Committed(batch, events))

    async def _run_syncer(self) -> None:
        while True:
            ready = [await self._syncing.receive()]
            while True:
                try:
                    ready.append(self._syncing.receive_nowait())
                except trio.WouldBlock:
                    break
            if self._durable and any(c.events or c.jobs for c in ready):
                # Shielded: a batch whose fsync started is finished and answered
                # even during shutdown.
                with trio.CancelScope(shield=True):
                    started = time.perf_counter()
                    await trio.to_thread.run_sync(self._sync_wal)
                    self.stats.fsync_seconds.observe(time.perf_counter() - started)
                self.stats.fsyncs += 1
            for committed in ready:
                self._publish(committed.events, committed.jobs)

    def _sync_wal(self, *, directory: bool = False) -> None:
        """fdatasync the WAL (as SQLite itself does): everything committed so far is
        then on disk. The directory is synced once, at open: the WAL file then
        stays in place (checkpoints truncate it, they never delete it) until close.
        """
        paths = [self._path + "-wal"]
        if directory:
            paths.append(str(Path(self._path).parent))
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no WAL: a checkpoint already synced the database file
            try:
                os.fsync(fd) if path != paths[0] else os.fdatasync(fd)
            finally:
                os.close(fd)

    def _run_batch(self, batch: list[Job[Any]]) -> list[Event]:
        conn = self._conn
        assert conn is not None
        journal: list[Event] = []
        conn.journal = journal
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                mark = len(journal)
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn, *job.args)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    del journal[mark:]  # its events were rolled back with it
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
        finally:
            conn.journal = None
        return [event_store.presented(conn, event) for event in journal]

    def checkpoint(self) -> bool:
        """Fold the WAL back into the database file; False if readers blocked part of it."""
        assert self._conn is not None
        busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0


class SqliteReaders(ReaderPool[sqlite3.Connection]):
    """A small pool of read connections used from worker threads."""

    def __init__(self, path: str | Path, *, size: int) -> None:
        self._path = str(path)
        super().__init__(self._open_one, _snapshot, size=size)

    def _open_one(self) -> sqlite3.Connection:
        return db.connect(self._path, readonly=True)


def _snapshot(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    # Each read sees one consistent snapshot.
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("ROLLBACK")


class Checkpointer:
    """Folds the WAL into the database file, off the writer and off the loop.

    The writer never checkpoints (``wal_autocheckpoint=0``), so this task runs a
    PASSIVE checkpoint every ``interval`` seconds from its own connection (it
    copies what no reader still needs and never blocks anyone). After a
    redaction it runs TRUNCATE, retried while readers hold old snapshots: until
    then the erased text still sits in old WAL frames.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        interval: float = 2.0,
        retry_every: float = 0.5,
        attempts: int = 20,
    ) -> None:
        self._path = str(path)
        self._interval = interval
        self._retry_every = retry_every
        self._attempts = attempts
        self._wanted = trio.Event()
        self._scrubbed = trio.Event()
        self.scrubs = 0
        self.failures = 0
        self.passive = 0

    def request(self) -> None:
        """Ask for a TRUNCATE checkpoint soon (after a redaction)."""
        self._wanted.set()

    async def wait_scrubs(self, count: int) -> None:
        """Return once ``count`` TRUNCATE checkpoints have completed in all."""
        while self.scrubs < count:
            await self._scrubbed.wait()

    def _checkpoint(self, mode: str) -> bool:
        conn = db.connect(self._path, synchronous="normal")
        try:
            conn.execute("PRAGMA busy_timeout = 100")
            busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            return int(busy) == 0
        finally:
            conn.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self._interval):
                await self._wanted.wait()
            if not self._wanted.is_set():
                try:
                    await trio.to_thread.run_sync(self._checkpoint, "PASSIVE")
                    self.passive += 1
                except sqlite3.Error:
                    pass
                continue
            self._wanted = trio.Event()
            await self._truncate()

    async def _truncate(self) -> None:
        for _ in range(self._attempts):
            try:
                done = await trio.to_thread.run_sync(self._checkpoint, "TRUNCATE")
            except sqlite3.Error:
                done = False
            if done:
                self.scrubs += 1
                self._scrubbed.set()
                self._scrubbed = trio.Event()
                return
            await trio.sleep(self._retry_every)
        self.failures += 1
