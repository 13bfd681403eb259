"""Migrations: applied once, idempotent, recorded, and refusing a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from storage import db, migrate
from storage.errors import MigrationError

EXPECTED_TABLES = {
    "participants",
    "tokens",
    "api_keys",
    "rooms",
    "memberships",
    "membership_spans",
    "events",
    "idempotency",
    "schema_version",
}


def _tables(conn: sqlite3.Connection) -> set[str]:
    if migrate.dialect_of(conn) == "postgres":
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    rows = conn.execute(sql).fetchall()
    return {r[0] for r in rows}


def _triggers(conn: sqlite3.Connection) -> set[str]:
    if migrate.dialect_of(conn) == "postgres":
        sql = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return {r[0] for r in conn.execute(sql).fetchall()}


def _schema(conn: sqlite3.Connection) -> list[Any]:
    if migrate.dialect_of(conn) == "postgres":
        sql = (
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
    else:
        sql = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    return conn.execute(sql).fetchall()


def _versions(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    return [(r[0], r[1]) for r in rows]


def test_shipped_migrations_are_numbered_from_one() -> None:
    shipped = migrate.migrations()
    assert [v for v, _, _ in shipped] == list(range(1, len(shipped) + 1))
    assert shipped[0][1] == "0001_init.sql"


def test_migrations_apply_and_record_schema_version(conn: sqlite3.Connection) -> None:
    shipped = migrate.migrations()
    assert _tables(conn) >= EXPECTED_TABLES
    assert _versions(conn) == [(v, name) for v, name, _ in shipped]
    assert migrate.current_version(conn) == len(shipped)
    assert {"events_append_only_delete", "events_append_only_update"} <= _triggers(conn)


def test_second_migrate_is_a_no_op(conn: sqlite3.Connection) -> None:
    before_versions = _versions(conn)
    before_schema = _schema(conn)
    assert migrate.migrate(conn) == len(migrate.migrations())
    assert migrate.migrate(conn) == len(migrate.migrations())
    assert _versions(conn) == before_versions
    after_schema = _schema(conn)
    assert [tuple(r) for r in after_schema] == [tuple(r) for r in before_schema]
    assert not conn.in_transaction


def test_fresh_database_starts_at_version_zero() -> None:
    fresh = db.connect(":memory:")
    try:
        assert migrate.current_version(fresh) == 0
        assert migrate.migrate(fresh) == len(migrate.migrations())
    finally:
        fresh.close()


def test_newer_schema_than_shipped_is_refused(conn: sqlite3.Connection) -> None:
    newer = len(migrate.migrations()) + 1
    conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (newer, "9999_x.sql"))
    with pytest.raises(MigrationError, match="newer"):
        migrate.migrate(conn)


def test_reopened_file_database_is_not_migrated_again(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    first = db.connect(path)
    migrate.migrate(first)
    first.execute(
        "INSERT INTO participants (participant_id, display_name, participant_type,"
        " created_at_ms) VALUES ('p-x', 'X', 'human', 1)"
    )
    first.close()
    second = db.connect(path)
    try:
        assert migrate.migrate(second) == len(migrate.migrations())
        assert len(_versions(second)) == len(migrate.migrations())
        assert second.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 1
        assert second.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert second.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        second.close()


def test_failed_migration_statement_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that breaks half-way leaves neither tables nor a version behind."""
    broken = [(1, "0001_broken.sql", "CREATE TABLE half (x INTEGER);\nTHIS IS NOT SQL;\n")]
    monkeypatch.setattr(migrate, "migrations", lambda engine="sqlite": broken)
    fresh = db.connect(":memory:")
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate.migrate(fresh)
        assert "half" not in _tables(fresh)
        assert migrate.current_version(fresh) == 0
    finally:
        fresh.close()


def test_split_keeps_trigger_bodies_whole() -> None:
    sql = (
        "CREATE TABLE t (x INTEGER);\n"
        "CREATE TRIGGER tr BEFORE DELETE ON t\nBEGIN\n"
        "    SELECT RAISE(ABORT, 'no; really');\nEND;\n"
        "-- trailing comment\n"
    )
    parts = migrate._split(sql)
    assert len(parts) == 2
    assert parts[1].startswith("CREATE TRIGGER")
    assert parts[1].endswith("END;")


def test_two_processes_migrating_a_fresh_file_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` and `admin create-participant` started together on a new data dir.

    The first reads version 0; before it takes the write lock the other one
    migrates everything. The first must then find nothing to do, not fail with
    "table ... already exists".
    """
    path = tmp_path / "race.db"
    first, other = db.connect(path), db.connect(path)
    real = migrate.current_version

    def racing(conn: sqlite3.Connection) -> int:
        version = real(conn)
        monkeypatch.setattr(migrate, "current_version", real)
        migrate.migrate(other)  # the other process wins the race
        return version

    monkeypatch.setattr(migrate, "current_version", racing)
    try:
        assert migrate.migrate(first) == len(migrate.migrations())
        assert len(_versions(first)) == len(migrate.migrations())
    finally:
        first.close()
        other.close()
