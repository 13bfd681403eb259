"""Pick the store from the settings: SQLite (the default) or PostgreSQL (``[cluster]``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conf import Settings
from homeserver.store.database import Readers, Scrubber, Writer


@dataclass(frozen=True, slots=True)
class Store:
    engine: str  # "sqlite" | "postgres"
    writer: Writer
    readers: Readers
    scrubber: Scrubber


def build_store(settings: Settings, db_path: Path) -> Store:
    """Unopened writer and readers. With ``[cluster] database_url`` set, PostgreSQL
    (psycopg is imported only then); otherwise the SQLite file ``db_path``."""
    if settings.cluster.enabled:
        from homeserver.store.postgres import NoScrub, PostgresReaders, PostgresWriter

        url = settings.cluster.database_url
        return Store(
            "postgres",
            PostgresWriter(
                url, synchronous=settings.db_synchronous, max_batch=settings.writer_max_batch
            ),
            PostgresReaders(url, size=settings.cluster.read_connections),
            NoScrub(),
        )
    from homeserver.store.sqlite import Checkpointer, SqliteReaders, SqliteWriter

    return Store(
        "sqlite",
        SqliteWriter(
            db_path, synchronous=settings.db_synchronous, max_batch=settings.writer_max_batch
        ),
        SqliteReaders(db_path, size=settings.db_read_connections),
        Checkpointer(db_path),
    )
