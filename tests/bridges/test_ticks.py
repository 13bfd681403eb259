"""Shared millisecond timers (bridges.ticks): one trio timer per millisecond, never early."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bridges.ticks import Ticks


async def test_paced_streams_due_in_the_same_millisecond_share_one_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = Ticks()
    start = trio.current_time()
    woke: list[float] = []

    async def sleeper(deadline: float) -> None:
        await ticks.sleep_until(deadline)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(sleeper, start + 0.0101 + i * 1e-5)  # all within one ms
        await trio.testing.wait_all_tasks_blocked()
        assert ticks.pending == 1
    assert ticks.pending == 0
    assert len(woke) == 50
    assert all(t == pytest.approx(start + 0.011) for t in woke)  # rounded up, never early


async def test_a_cancelled_first_sleeper_does_not_wake_the_others_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = Ticks()
    start = trio.current_time()
    woke: list[float] = []

    async def follower() -> None:
        await ticks.sleep_until(start + 0.5)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.1):  # the first sleeper (owner of the timer) gives up
            async with trio.open_nursery() as inner:
                inner.start_soon(ticks.sleep_until, start + 0.5)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(follower)
                nursery.start_soon(follower)
                await trio.sleep_forever()
        assert trio.current_time() == pytest.approx(start + 0.1)
    assert woke == [pytest.approx(start + 0.5)] * 2
    assert ticks.pending == 0


async def test_a_deadline_already_past_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = Ticks()
    start = trio.current_time()
    await ticks.sleep_until(start - 1)
    assert trio.current_time() == start
    assert ticks.pending == 0
