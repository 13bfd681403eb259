"""``serve`` freezes the start-up heap and makes full collections rare (bench/RESULTS.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from homeserver import cli


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_settle_collector_freezes_and_spaces_full_collections() -> None:
    young, middle, _ = gc.get_threshold()
    cli.settle_collector()
    assert gc.get_threshold() == (young, middle, cli.FULL_COLLECTION_EVERY)
    assert gc.get_freeze_count() > 0
