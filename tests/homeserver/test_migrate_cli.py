"""``homeserver migrate`` and the admin commands on either store engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver import cli
from storage import db, migrate, pg
from storage import participants as pstore

SHIPPED = len(migrate.migrations())


def _config(tmp_path: Path, database_url: str | None) -> list[str]:
    if database_url is None:
        return ["--data-dir", str(tmp_path / "data")]
    toml = tmp_path / "node.toml"
    toml.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[cluster]\nnode_id = "n1"\ndatabase_url = "{database_url}"\n'
        'bus_url = "redis://127.0.0.1:9/0"\n'
    )
    return ["--config", str(toml)]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str | None:
    """None (the SQLite file) or the URL of an empty PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_empty_url"))


def test_migrate_applies_every_migration_once(
    tmp_path: Path, store: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _config(tmp_path, store)
    engine = "sqlite" if store is None else "postgresql"
    assert cli.main(["migrate", *args]) == 0
    assert capsys.readouterr().out.strip() == f"schema version {SHIPPED} ({engine}; was 0)"
    assert cli.main(["migrate", *args]) == 0
    assert capsys.readouterr().out.strip() == f"schema version {SHIPPED} ({engine}; was {SHIPPED})"
    conn = (
        db.connect(tmp_path / "data" / "homeserver.db")
        if store is None
        else pg.as_sqlite(pg.connect(store))
    )
    try:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, SHIPPED + 1))
        head = conn.execute("SELECT stream, position FROM stream_head").fetchall()
        assert [tuple(r) for r in head] == [("events", 0)]
    finally:
        conn.close()


def test_admin_create_participant_writes_to_the_configured_store(
    tmp_path: Path, store: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _config(tmp_path, store)
    assert cli.main(["admin", "create-participant", "carol", "--admin", *args]) == 0
    assert "username=carol" in capsys.readouterr().out
    conn = (
        db.connect(tmp_path / "data" / "homeserver.db")
        if store is None
        else pg.as_sqlite(pg.connect(store))
    )
    try:
        found = pstore.get_participant_by_username(conn, "carol")
    finally:
        conn.close()
    assert found is not None
    assert found.is_admin is True


def test_cluster_config_with_knowledge_on_migrates(
    tmp_path: Path, pg_empty_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Knowledge runs on PostgreSQL (storage.knowledge_pg): a cluster config with it on
    (the default) is not refused, and the postings tables are migrated."""
    assert cli.main(["migrate", *_config(tmp_path, pg_empty_url)]) == 0
    assert f"schema version {SHIPPED}" in capsys.readouterr().out
    conn = pg.connect(pg_empty_url)
    try:
        row = conn.execute("SELECT COUNT(*) FROM knowledge_postings").fetchone()
    finally:
        conn.close()
    assert row is not None
    assert row[0] == 0
