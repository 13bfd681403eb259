"""PostgreSQL store (``[cluster] database_url``): the log of record shared by N processes.

psycopg 3's async driver is built on asyncio and does not run under trio, so
this store uses its **sync** driver off the loop:

1. One writer connection per process, used only by the process's one writer
   thread (:class:`WriterThread`). Each batch runs there as ``BEGIN``;
   ``SELECT ... FROM stream_head FOR UPDATE`` (the cluster-wide write lock,
   taken first so two processes' batches never deadlock on each other's
   rows); a SAVEPOINT per job; COMMIT.
   Group commit is kept: one lock, one commit (one WAL flush) per batch.
2. Positions come from that same ``stream_head`` row
   (``storage.events.next_position_txn``): another process's batch waits for
   the lock, then continues from the committed head. Positions are gapless and
   in commit order across processes; a job rolled back to its savepoint gives
   its numbers back.
3. Durability "full" is ``synchronous_commit = on`` (COMMIT returns once the
   WAL is flushed); "normal" is ``off``. No syncer thread: the commit is the
   fsync. Callers are answered after COMMIT and ``on_commit``.
4. Reads: a pool of read-only connections used from ``trio.to_thread``, each
   read one ``REPEATABLE READ READ ONLY`` transaction (one snapshot).
5. A connection that broke (server restart, network) is replaced before its
   next use; the batch or read that saw it break fails with
   ``sqlite3.OperationalError`` like any other database error.

There is no WAL scrub: :class:`NoScrub` stands in for SQLite's checkpointer
(README: on PostgreSQL, erased text stays in WAL segments, replicas and
backups until they are recycled).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import outcome
import trio

from homeserver.store.database import GroupCommit, Job, ReaderPool
from protocol.events import Event
from storage import events as event_store
from storage import migrate, pg

T = TypeVar("T")
log = logging.getLogger("homeserver.store")

_LOCK_HEAD = "SELECT position FROM stream_head WHERE stream = 'events' FOR UPDATE"


class WriterThread:
    """One dedicated OS thread that runs the writer's batches, one at a time.

    ``await run(fn, *args)`` hands ``fn`` to the thread and waits (shielded: a
    batch that started is finished and answered, even during shutdown).
    """

    def __init__(self, name: str = "hs-pg-writer") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def job() -> None:
            box.append(outcome.capture(partial(fn, *args)))
            with contextlib.suppress(trio.RunFinishedError):  # the loop ended meanwhile
                token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        return box[0].unwrap()

    def stop(self) -> None:
        self._jobs.put(None)


class PostgresWriter(GroupCommit):
    """The writer of one process; several processes may write one database."""

    def __init__(self, url: str, *, synchronous: str, max_batch: int) -> None:
        super().__init__(max_batch=max_batch)
        self._url = url
        self._synchronous = synchronous
        self._conn: pg.PgConnection | None = None
        self._thread: WriterThread | None = None

    def open(self) -> int:
        """Connect, migrate (serialised across processes), return the stream head."""
        self._conn = pg.connect(self._url, synchronous=self._synchronous)
        conn = pg.as_sqlite(self._conn)
        migrate.migrate(conn)
        self.published_position = event_store.head_position(conn)
        return self.published_position

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _is_open(self) -> bool:
        return self._conn is not None

    async def _commit(self, batch: list[Job[Any]]) -> None:
        if self._thread is None:
            self._thread = WriterThread()
        events = await self._thread.run(self._run_batch, batch)
        self._publish(events, batch)

    def _connection(self) -> pg.PgConnection:
        conn = self._conn
        if conn is None or conn.raw.broken or conn.raw.closed:
            if conn is not None:
                log.warning("writer: reconnecting to PostgreSQL")
                conn.close()
            conn = self._conn = pg.connect(self._url, synchronous=self._synchronous)
        return conn

    def _run_batch(self, batch: list[Job[Any]]) -> list[Event]:
        try:
            conn = self._connection()
        except sqlite3.Error as exc:
            self._fail(batch, exc)
            return []
        journal: list[Event] = []
        conn.journal = journal
        try:
            conn.execute("BEGIN")
            conn.execute(_LOCK_HEAD)
            for job in batch:
                mark = len(journal)
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(pg.as_sqlite(conn), *job.args)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    del journal[mark:]  # its events (and their positions) were rolled back
                    job.result = outcome.Error(exc)
                else:
                    job.result = outcome.Value(value)
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail(batch, exc)
            if not conn.raw.broken and conn.in_transaction:
                conn.execute("ROLLBACK")
            return []
        finally:
            conn.journal = None
        sconn = pg.as_sqlite(conn)
        return [event_store.presented(sconn, event) for event in journal]

    def _fail(self, batch: list[Job[Any]], exc: sqlite3.Error) -> None:
        self.stats.failed_commits += 1
        for job in batch:
            job.result = outcome.Error(exc)


class PostgresReaders(ReaderPool[pg.PgConnection]):
    """A small pool of read-only connections used from worker threads."""

    def __init__(self, url: str, *, size: int) -> None:
        self._url = url
        super().__init__(self._open_one, self._run, size=size)

    def _open_one(self) -> pg.PgConnection:
        return pg.connect(self._url, readonly=True)

    def _run(self, conn: pg.PgConnection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if conn.raw.broken or conn.raw.closed:
            # Replaced in place: the pool keeps its size.
            fresh = pg.connect(self._url, readonly=True)
            conn.raw = fresh.raw
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return fn(pg.as_sqlite(conn), *args)
        finally:
            if not conn.raw.broken:
                conn.execute("ROLLBACK")


class NoScrub:
    """PostgreSQL has no WAL TRUNCATE to prove erased text left the disk.

    Redaction still erases the row (``storage.events.redact_txn``) and VACUUM
    reclaims the old tuple in time, but the text stays in WAL segments,
    replicas and backups until they are recycled. Requests are counted and
    answered at once, so waiting on a scrub never hangs.
    """

    def __init__(self) -> None:
        self.scrubs = 0
        self.requests = 0

    def request(self) -> None:
        self.requests += 1

    async def wait_scrubs(self, count: int) -> None:
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
