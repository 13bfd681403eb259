"""Storage fixtures: one migrated connection, in memory and on disk."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import db, migrate


@pytest.fixture(params=["memory", "file"])
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A freshly migrated database; every storage test runs against both kinds."""
    target = ":memory:" if request.param == "memory" else str(tmp_path / "storage.db")
    connection = db.connect(target)
    migrate.migrate(connection)
    try:
        yield connection
    finally:
        connection.close()
