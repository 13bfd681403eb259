"""A ScaiBot server (dev/echo without delay) for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.scaibot.support import Env, scaibot_env


@pytest.fixture
async def env(tmp_path: Path, database_url: str | None) -> AsyncIterator[Env]:
    async with scaibot_env(tmp_path, database_url=database_url) as e:
        yield e
