"""The database the cluster tests' processes share: PostgreSQL (tests/engines.py's
server, one fresh database copied from its migrated template), the log of record.

Where PostgreSQL cannot run here the tests skip and say why. ``media`` lives in
one shared data directory, as a deployment's shared storage would.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.engines import TEMPLATE, PgServer

_counter = itertools.count(1)


@contextmanager
def cluster_database(tmp: Path, server: PgServer) -> Iterator[tuple[dict[str, str], Path]]:
    name = f"hs_cluster_{os.getpid()}_{next(_counter)}"
    server.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    data_dir = tmp / "data"
    data_dir.mkdir(exist_ok=True)
    try:
        yield {"HOMESERVER_CLUSTER_DATABASE_URL": server.url(name)}, data_dir
    finally:
        server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
