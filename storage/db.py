"""SQLite connections: WAL, foreign keys, a busy timeout, and ``atomic``.

Connections are opened in autocommit mode (``isolation_level=None``) so that
transactions are explicit: the writer uses ``BEGIN IMMEDIATE`` and savepoints.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


class Connection(sqlite3.Connection):
    """A connection that can keep a journal of the events appended through it.

    The writer sets ``journal`` to a list for the length of a batch; the event
    store appends every event it stores, so the batch can be published without
    reading it back.
    """

    journal: list[Any] | None = None


def connect(
    path: str | Path,
    *,
    synchronous: str = "full",
    readonly: bool = False,
    check_same_thread: bool = False,
) -> Connection:
    """Open a connection configured for this server.

    ``path`` may be ``":memory:"`` (tests). ``readonly`` connections refuse writes.
    """
    target = str(path)
    if readonly and target != ":memory:":
        uri = Path(target).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=check_same_thread,
            factory=Connection,
        )
    else:
        conn = sqlite3.connect(
            target, isolation_level=None, check_same_thread=check_same_thread, factory=Connection
        )
    assert isinstance(conn, Connection)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    if target != ":memory:" and not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
    # Redacted text must not survive in free pages of the database file.
    conn.execute("PRAGMA secure_delete = ON")
    return conn


@contextmanager
def atomic(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """A transaction, or a savepoint when one is already open."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT atomic")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO atomic")
            conn.execute("RELEASE atomic")
            raise
        conn.execute("RELEASE atomic")
        return
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
