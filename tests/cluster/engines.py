"""The database the cluster tests' processes share.

Until the PostgreSQL store lands this is one SQLite file in a shared data
directory (SQLite's own write lock serialises the processes' commits, so
positions are still gapless and in commit order).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cluster_database(tmp: Path) -> Iterator[tuple[dict[str, str], Path]]:
    data_dir = tmp / "data"
    data_dir.mkdir(exist_ok=True)
    yield {}, data_dir
