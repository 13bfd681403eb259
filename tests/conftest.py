"""Fixtures: a running server in-process on port 0 and an API client for it.

Hypothesis ``@given`` tests must not use these (trio fixtures lag one example
behind under Hypothesis); they start a server in the test body instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from homeserver.app import Running
from tests.support import Api, api_for, make_settings, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with start_server(make_settings(tmp_path / "data")) as running:
        yield running


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    async with api_for(server) as client:
        yield client
