"""protocol.ratelimit: the rolling-window guarantee, refusals, pruning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.ratelimit import SlidingWindowLimiter, retry_after_seconds


def test_sixty_per_minute_at_one_instant() -> None:
    lim = SlidingWindowLimiter()
    now = 1000.0
    for _ in range(60):
        assert lim.try_acquire("p-a", now, limit=60, window=60.0) == 0.0
    wait = lim.try_acquire("p-a", now, limit=60, window=60.0)
    assert wait == pytest.approx(60.0)
    assert retry_after_seconds(wait) == 60
    # Other keys are independent.
    assert lim.try_acquire("p-b", now, limit=60, window=60.0) == 0.0
    # Still refused just before the window passes, allowed again once it has.
    assert lim.try_acquire("p-a", now + 59.5, limit=60, window=60.0) == pytest.approx(0.5)
    for _ in range(60):
        assert lim.try_acquire("p-a", now + 60.0, limit=60, window=60.0) == 0.0
    assert lim.try_acquire("p-a", now + 60.0, limit=60, window=60.0) > 0


def test_wait_is_until_the_oldest_counted_leaves() -> None:
    lim = SlidingWindowLimiter()
    for t in (0.0, 10.0, 20.0):
        assert lim.try_acquire("k", t, limit=3, window=60.0) == 0.0
    assert lim.try_acquire("k", 30.0, limit=3, window=60.0) == pytest.approx(30.0)
    assert lim.try_acquire("k", 60.0, limit=3, window=60.0) == 0.0  # t=0 expired
    assert lim.try_acquire("k", 61.0, limit=3, window=60.0) == pytest.approx(9.0)


def test_refusals_record_nothing() -> None:
    lim = SlidingWindowLimiter()
    assert lim.try_acquire("k", 0.0, limit=2, window=10.0) == 0.0
    assert lim.try_acquire("k", 0.0, limit=2, window=10.0) == 0.0
    before = lim.statistics()["stamps"]
    for t in range(1, 10):
        assert lim.try_acquire("k", float(t), limit=2, window=10.0) == pytest.approx(10.0 - t)
    assert lim.statistics()["stamps"] == before
    assert lim.try_acquire("k", 10.0, limit=2, window=10.0) == 0.0
    assert lim.try_acquire("k", 10.0, limit=2, window=10.0) == 0.0
    stats = lim.statistics()
    assert stats["allowed"] == 4
    assert stats["refused"] == 9


def test_unlimited() -> None:
    lim = SlidingWindowLimiter()
    for _ in range(1000):
        assert lim.try_acquire("bot", 0.0, limit=0, window=60.0) == 0.0
    assert lim.statistics() == {"keys": 0, "stamps": 0, "allowed": 1000, "refused": 0}


def test_bad_arguments() -> None:
    lim = SlidingWindowLimiter()
    with pytest.raises(ValueError, match="limit"):
        lim.try_acquire("k", 0.0, limit=-1, window=60.0)
    with pytest.raises(ValueError, match="window"):
        lim.try_acquire("k", 0.0, limit=1, window=0.0)


def test_limit_change_takes_effect() -> None:
    lim = SlidingWindowLimiter()
    for _ in range(5):
        assert lim.try_acquire("k", 0.0, limit=5, window=60.0) == 0.0
    # Lowered to 2: refused until 4 of the 5 leave the window.
    assert lim.try_acquire("k", 1.0, limit=2, window=60.0) == pytest.approx(59.0)
    # Raised to 10: allowed straight away.
    assert lim.try_acquire("k", 1.0, limit=10, window=60.0) == 0.0


def test_per_key_storage_is_bounded_by_limit() -> None:
    lim = SlidingWindowLimiter()
    for i in range(1000):
        lim.try_acquire("k", i * 0.5, limit=7, window=5.0)
    assert lim.statistics()["stamps"] <= 7


def test_prune_drops_idle_keys() -> None:
    lim = SlidingWindowLimiter()
    for i in range(100):
        lim.try_acquire(f"k{i}", 0.0, limit=5, window=60.0)
    lim.try_acquire("fresh", 59.0, limit=5, window=60.0)
    assert lim.prune(59.9) == 0
    assert lim.prune(60.0) == 100
    assert lim.statistics()["keys"] == 1
    assert lim.prune(119.0) == 1
    assert lim.statistics()["keys"] == 0


def test_opportunistic_pruning_bounds_memory() -> None:
    lim = SlidingWindowLimiter(prune_every=64)
    peak = 0
    for i in range(20_000):
        # Every key is used once; at most 10 keys are active in any window.
        lim.try_acquire(f"k{i}", float(i), limit=3, window=10.0)
        peak = max(peak, lim.statistics()["keys"])
    assert peak <= 64 + 10
    assert lim.statistics()["allowed"] == 20_000


def test_reset() -> None:
    lim = SlidingWindowLimiter()
    lim.try_acquire("k", 0.0, limit=1, window=60.0)
    assert lim.try_acquire("k", 0.0, limit=1, window=60.0) > 0
    lim.reset("k")
    assert lim.try_acquire("k", 0.0, limit=1, window=60.0) == 0.0


@pytest.mark.parametrize(
    ("wait", "seconds"), [(0.0, 1), (0.001, 1), (1.0, 1), (1.0001, 2), (59.2, 60), (60.0, 60)]
)
def test_retry_after_seconds(wait: float, seconds: int) -> None:
    assert retry_after_seconds(wait) == seconds


@given(
    limit=st.integers(min_value=1, max_value=6),
    window_quarters=st.integers(min_value=1, max_value=40),
    steps=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=150),
)
def test_rolling_window_property(limit: int, window_quarters: int, steps: list[int]) -> None:
    """In every half-open interval [t, t + window) at most ``limit`` are allowed.

    Timestamps are multiples of 0.25 so float arithmetic is exact.
    """
    lim = SlidingWindowLimiter(prune_every=8)
    window = window_quarters / 4
    now = 0.0
    allowed: list[float] = []
    for step in steps:
        now += step / 4
        wait = lim.try_acquire("k", now, limit=limit, window=window)
        if wait == 0.0:
            allowed.append(now)
        else:
            assert wait > 0
            # Nothing recorded: the limiter still counts exactly `limit` in the window.
            assert sum(1 for t in allowed if t > now - window) == limit
            # The wait is exactly when the oldest counted one leaves the window.
            counted = [t for t in allowed if t > now - window]
            assert wait == counted[0] + window - now
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + window) <= limit


@given(
    limit=st.integers(min_value=1, max_value=5),
    steps=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=100),
)
def test_allows_whenever_window_has_room(limit: int, steps: list[int]) -> None:
    """The limiter is not stricter than the rule: it refuses only when the window is full."""
    lim = SlidingWindowLimiter()
    window = 5.0
    now = 0.0
    allowed: list[float] = []
    for step in steps:
        now += step / 2
        in_window = sum(1 for t in allowed if t > now - window)
        wait = lim.try_acquire("k", now, limit=limit, window=window)
        assert (wait == 0.0) == (in_window < limit)
        if wait == 0.0:
            allowed.append(now)
