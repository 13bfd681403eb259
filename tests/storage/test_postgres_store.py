"""The PostgreSQL store's own behaviour: reconnects, read snapshots, error translation."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest
import trio

from homeserver.store.postgres import PostgresReaders, PostgresWriter
from protocol.events import EventDraft, EventType
from storage import events as event_store
from storage import pg
from tests.engines import PgServer
from tests.storage.writer_jobs import make_room


def _append(conn: sqlite3.Connection) -> int:
    draft = EventDraft("room-a", EventType.MESSAGE, "p-a", "p-a", {"body": "x"})
    return event_store.append_event_txn(conn, draft, now_ms=5).stream_position


def _backend_pid(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[tuple[PostgresWriter, PostgresReaders]]:
    writer = PostgresWriter(pg_url, synchronous="full", max_batch=16)
    readers = PostgresReaders(pg_url, size=1)
    writer.open()
    readers.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            yield writer, readers
            nursery.cancel_scope.cancel()
    finally:
        readers.close()
        writer.close()


async def test_a_dropped_writer_connection_fails_one_batch_then_reconnects(
    store: tuple[PostgresWriter, PostgresReaders], pg_server: PgServer
) -> None:
    writer, readers = store
    await writer.write(make_room)
    pg_server.admin(f"SELECT pg_terminate_backend({await writer.write(_backend_pid)})")
    with pytest.raises(sqlite3.OperationalError):
        await writer.write(_append)
    assert await writer.write(_append) == 1  # the failed batch gave its position back
    assert await readers.read(event_store.head_position) == 1
    assert writer.stats.failed_commits == 1


async def test_a_dropped_read_connection_is_replaced(
    store: tuple[PostgresWriter, PostgresReaders], pg_server: PgServer
) -> None:
    _, readers = store
    pg_server.admin(f"SELECT pg_terminate_backend({await readers.read(_backend_pid)})")
    with pytest.raises(sqlite3.OperationalError):
        await readers.read(_backend_pid)
    assert await readers.read(event_store.head_position) == 0


async def test_reads_are_read_only_snapshots(store: tuple[PostgresWriter, PostgresReaders]) -> None:
    writer, readers = store
    await writer.write(make_room)
    with pytest.raises(sqlite3.OperationalError, match="read-only"):
        await readers.read(_append)


def test_constraint_and_trigger_violations_are_integrity_errors(pg_url: str) -> None:
    conn = pg.as_sqlite(pg.connect(pg_url))
    try:
        make_room(conn)
        with pytest.raises(sqlite3.IntegrityError, match="stream_head_pkey"):
            conn.execute("INSERT INTO stream_head (stream, position) VALUES ('events', 0)")
        _append(conn)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        row = conn.execute("SELECT stream_position AS p, event_id FROM events").fetchone()
        assert (row[0], row["p"], len(row), row.keys()) == (1, 1, 2, ["p", "event_id"])
        assert conn.execute("SELECT ? AS flag, '100%' AS pct", (True,)).fetchone() == (1, "100%")
    finally:
        conn.close()
