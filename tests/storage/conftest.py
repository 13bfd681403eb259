"""Storage fixtures: one migrated connection, in memory, on disk, and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import db, migrate


@pytest.fixture(params=["memory", "file", "postgres"])
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A freshly migrated database; every storage test runs against all three kinds.

    A test marked ``sqlite_only`` skips the postgres kind (it checks SQLite itself).
    """
    if request.param == "postgres":
        if request.node.get_closest_marker("sqlite_only"):
            pytest.skip("sqlite_only: checks SQLite itself")
        from storage import pg

        connection = pg.connect(request.getfixturevalue("pg_url"))
        try:
            yield pg.as_sqlite(connection)
        finally:
            connection.close()
        return
    target = ":memory:" if request.param == "memory" else str(tmp_path / "storage.db")
    sqlite_conn = db.connect(target)
    migrate.migrate(sqlite_conn)
    try:
        yield sqlite_conn
    finally:
        sqlite_conn.close()
