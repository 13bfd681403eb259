"""Fixtures: a running server in-process on port 0 and an API client for it.

The ``server`` fixture runs on each store engine (``engine``: "sqlite", and
"postgres" for the storage and REST suites, see ``PG_SUITES``): the same test,
twice. A test or module marked ``sqlite_only`` (it reads the SQLite file, or
tests SQLite machinery such as the WAL scrub) runs on SQLite alone. The
PostgreSQL server is started once per session (``tests.engines``); where it
cannot be, the postgres cases skip with the reason.

Hypothesis ``@given`` tests must not use these (trio fixtures lag one example
behind under Hypothesis); they start a server in the test body instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from homeserver.app import Running
from tests.engines import pg_empty_url, pg_server, pg_url
from tests.support import Api, api_for, make_settings, start_server

__all__ = ["pg_empty_url", "pg_server", "pg_url"]

# The suites that also run with PostgreSQL as the store (issue 14).
PG_SUITES = (
    "tests/storage/",
    "tests/homeserver/",
    "tests/stream/",
    "tests/ai/",
    "tests/scaibot/",
    "tests/knowledge/",
)


def _engines_for(metafunc: pytest.Metafunc) -> list[str]:
    path = str(metafunc.definition.path.relative_to(metafunc.config.rootpath))
    if not path.startswith(PG_SUITES) or metafunc.definition.get_closest_marker("sqlite_only"):
        return ["sqlite"]
    return ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", _engines_for(metafunc), indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest) -> str | None:
    """None on SQLite; a fresh migrated PostgreSQL database otherwise."""
    if engine == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def server(tmp_path: Path, database_url: str | None) -> AsyncIterator[Running]:
    async with start_server(make_settings(tmp_path / "data", database_url=database_url)) as running:
        yield running


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    async with api_for(server) as client:
        yield client
