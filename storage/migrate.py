"""Numbered SQL migrations (``schema/NNNN_name.sql``), applied in order at start-up.

Both engines run the same numbered list and record it in the same
``schema_version`` table. On PostgreSQL each file is translated
(``storage.dialect.schema_to_postgres``) with its SQLite triggers left out, and
``schema/pg/NNNN_name.sql``, where it exists, adds that migration's
PostgreSQL-only statements (the triggers as PL/pgSQL functions). Two processes
migrating one PostgreSQL database at once are serialised by an advisory lock.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from storage import dialect
from storage.db import atomic
from storage.errors import MigrationError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


_TRIGGER = re.compile(r"^CREATE\s+TRIGGER\b.*?^END;", re.IGNORECASE | re.DOTALL | re.MULTILINE)
_LOCK = 0x48534D49  # pg_advisory_lock key: "HSMI"


def dialect_of(conn: sqlite3.Connection) -> str:
    """ "sqlite" or "postgres" (``storage.pg.PgConnection``)."""
    return str(getattr(conn, "dialect", "sqlite"))


def migrations(engine: str = "sqlite") -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration, in order, for ``engine``."""
    found = []
    schema = resources.files("storage").joinpath("schema")
    for entry in schema.iterdir():
        match = _NAME.match(entry.name)
        if match:
            sql = entry.read_text("utf-8")
            if engine == "postgres":
                extra = schema.joinpath("pg", entry.name)
                sql = dialect.schema_to_postgres(_TRIGGER.sub("", sql))
                if extra.is_file():
                    sql += "\n" + extra.read_text("utf-8")
            found.append((int(match.group(1)), entry.name, sql))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps, got {versions}")
    return found


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; return the new version."""
    if dialect_of(conn) == "postgres":
        conn.execute("SELECT pg_advisory_lock(?)", (_LOCK,))
        try:
            return _migrate(conn, "postgres")
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (_LOCK,))
    return _migrate(conn, "sqlite")


def _migrate(conn: sqlite3.Connection, engine: str) -> int:
    shipped = migrations(engine)
    version = current_version(conn)
    if version > len(shipped):
        raise MigrationError(
            f"database schema version {version} is newer than this server "
            f"(knows {len(shipped)}); upgrade the server"
        )
    for number, name, sql in shipped[version:]:
        with atomic(conn):
            # Re-read under the write lock: another process (serve and an admin
            # command on a fresh data dir) may have applied it since.
            if current_version(conn) >= number:
                version = number
                continue
            if engine == "postgres":
                conn.executescript(sql)
            else:
                for statement in _split(sql):
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (number, name))
        version = number
    return version


def _split(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not buf.strip().startswith("--"):
        statements.append(buf.strip())
    return statements
