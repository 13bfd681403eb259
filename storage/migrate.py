"""Numbered SQL migrations (``schema/NNNN_name.sql``), applied in order at start-up."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from storage.db import atomic
from storage.errors import MigrationError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration, in order."""
    found = []
    for entry in resources.files("storage").joinpath("schema").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
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
    shipped = migrations()
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
