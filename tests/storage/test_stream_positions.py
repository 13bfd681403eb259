"""Stream positions are gapless and in commit order, on both engines, across writers.

Two writers on one database stand for two processes (on PostgreSQL they are two
connections whose batches run in two threads at once; on SQLite two connections
to one file). Jobs from both are interleaved, and every third one appends and
then fails, so its savepoint is rolled back. Meanwhile a reader keeps taking
snapshots: every snapshot must show exactly positions 1..k (a position can
never become visible before a smaller one), and at the end the table holds
exactly 1..n for the n events that committed.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from homeserver.store.database import Readers, Writer
from protocol.events import Event, EventDraft, EventType
from storage import events as event_store
from tests.storage.writer_jobs import append_message, make_room

WRITERS = 2
JOBS_PER_WRITER = 60


def _append(conn: sqlite3.Connection, room_id: str, n: int, fail: bool) -> Event:
    event = append_message(conn, room_id, n)
    if fail:
        raise ValueError("rolled back after taking a position")
    return event


def _positions(conn: sqlite3.Connection) -> list[int]:
    rows = conn.execute("SELECT stream_position FROM events ORDER BY stream_position").fetchall()
    return [int(r[0]) for r in rows]


Factory = Callable[[], tuple[Writer, Readers]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes writer + readers pairs on one shared database of the given engine."""
    if request.param == "postgres":
        from homeserver.store.postgres import PostgresReaders, PostgresWriter

        url = str(request.getfixturevalue("pg_url"))
        return lambda: (
            PostgresWriter(url, synchronous="normal", max_batch=8),
            PostgresReaders(url, size=1),
        )
    from homeserver.store.sqlite import SqliteReaders, SqliteWriter

    path = tmp_path / "positions.db"
    return lambda: (
        SqliteWriter(path, synchronous="normal", max_batch=8),
        SqliteReaders(path, size=1),
    )


@asynccontextmanager
async def _stores(factory: Factory, count: int) -> AsyncIterator[list[tuple[Writer, Readers]]]:
    pairs = [factory() for _ in range(count)]
    for writer, readers in pairs:
        writer.open()
        readers.open()
    try:
        async with trio.open_nursery() as nursery:
            for writer, _ in pairs:
                await nursery.start(writer.run)
            yield pairs
            nursery.cancel_scope.cancel()
    finally:
        for writer, readers in pairs:
            readers.close()
            writer.close()


async def test_concurrent_writers_with_rollbacks_give_gapless_commit_ordered_positions(
    store_factory: Factory,
) -> None:
    published: list[list[int]] = [[] for _ in range(WRITERS)]
    snapshots: list[list[int]] = []
    counter = itertools.count()
    async with _stores(store_factory, WRITERS) as pairs:
        for mine, (writer, _) in zip(published, pairs, strict=True):

            def on_commit(events: Sequence[Event], mine: list[int] = mine) -> None:
                mine.extend(e.stream_position for e in events)

            writer.set_on_commit(on_commit)
        await pairs[0][0].write(make_room, "room-a")
        committed: list[int] = []
        failed = 0
        writing = True

        async def client(writer: Writer) -> None:
            nonlocal failed
            for _ in range(JOBS_PER_WRITER):
                n = next(counter)
                try:
                    event = await writer.write(_append, "room-a", n, n % 3 == 0)
                except ValueError:
                    failed += 1
                else:
                    committed.append(event.stream_position)

        async def watch(readers: Readers) -> None:
            while writing:
                snapshots.append(await readers.read(_positions))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, pairs[1][1])
            async with trio.open_nursery() as clients:
                for writer, _ in pairs:
                    for _ in range(3):  # several callers per writer: batches of several jobs
                        clients.start_soon(client, writer)
            writing = False
        final = await pairs[0][1].read(_positions)
        head = await pairs[1][1].read(event_store.head_position)

    total = WRITERS * 3 * JOBS_PER_WRITER
    assert failed == total // 3
    assert final == list(range(1, len(final) + 1))  # no hole, rollbacks included
    assert sorted(committed) == final
    assert head == len(final)
    assert len(snapshots) > 1
    for seen in snapshots:  # never a later position visible before an earlier one
        assert seen == list(range(1, len(seen) + 1))
    for mine in published:  # each writer publishes its own events in position order
        assert mine == sorted(mine)
    assert sorted(itertools.chain(*published)) == final


def _hold_position(conn: sqlite3.Connection, room_id: str) -> int:
    return _append(conn, room_id, 0, fail=False).stream_position


async def test_a_position_taken_by_an_uncommitted_transaction_is_not_skipped(
    pg_url: str,
) -> None:
    """The PostgreSQL-sequence failure mode (T1 takes 1 and stays open, T2 takes 2 and
    commits, a reader at 2 never sees 1) cannot happen: T2 waits for T1's commit.

    PostgreSQL only: its jobs run in a worker thread, so one can be held open while
    the loop goes on (SQLite's writer runs jobs on the trio thread).
    """
    from homeserver.store.postgres import PostgresReaders, PostgresWriter

    def factory() -> tuple[Writer, Readers]:
        return (
            PostgresWriter(pg_url, synchronous="normal", max_batch=8),
            PostgresReaders(pg_url, size=1),
        )

    order: list[str] = []
    async with _stores(factory, 2) as pairs:
        (first, _), (second, readers) = pairs
        await first.write(make_room, "room-a")
        release = trio.Event()
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def slow(conn: sqlite3.Connection) -> int:  # on the writer's own thread
            position = _hold_position(conn, "room-a")
            trio.from_thread.run_sync(started.set, trio_token=token)
            trio.from_thread.run(release.wait, trio_token=token)
            return position

        async def run_slow() -> None:
            order.append(f"slow={await first.write(slow)}")

        async def run_fast() -> None:
            order.append(f"fast={await second.write(_hold_position, 'room-a')}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_slow)
            await started.wait()
            nursery.start_soon(run_fast)
            seen_while_open = await readers.read(_positions)
            release.set()
        final = await readers.read(_positions)
    assert seen_while_open == []  # the open transaction's position is not visible
    assert sorted(order) == ["fast=2", "slow=1"]
    assert final == [1, 2]


def _send_once(conn: sqlite3.Connection, key: str) -> int:
    """The idempotent send's shape: look the key up, append only if it is new."""
    found = event_store.idempotent_event(conn, sender_id="p-a", event_uuid=key, not_before_ms=0)
    if found is not None:
        return found.stream_position
    draft = EventDraft("room-a", EventType.MESSAGE, "p-a", "p-a", {"k": key}, event_uuid=key)
    return event_store.append_event_txn(conn, draft, now_ms=10).stream_position


async def test_check_then_append_is_one_event_across_writers(pg_url: str) -> None:
    """Two processes get the same (sender, event_uuid) at once: one event, both get it.

    Each batch takes the stream_head lock before its first job, so the second batch's
    lookup runs after the first one's commit (READ COMMITTED sees it)."""
    from homeserver.store.postgres import PostgresReaders, PostgresWriter

    def factory() -> tuple[Writer, Readers]:
        return (
            PostgresWriter(pg_url, synchronous="normal", max_batch=8),
            PostgresReaders(pg_url, size=1),
        )

    results: dict[str, list[int]] = {f"k{n}": [] for n in range(20)}
    async with _stores(factory, 2) as pairs:
        await pairs[0][0].write(make_room, "room-a")

        async def send(writer: Writer, key: str) -> None:
            results[key].append(await writer.write(_send_once, key))

        async with trio.open_nursery() as nursery:
            for key in results:
                for writer, _ in pairs:
                    nursery.start_soon(send, writer, key)
        final = await pairs[0][1].read(_positions)
    assert all(len(set(got)) == 1 and len(got) == 2 for got in results.values()), results
    assert final == list(range(1, len(results) + 1))
