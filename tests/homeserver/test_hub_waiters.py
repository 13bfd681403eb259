"""Long-poll waiters: a timed-out poll forgets its waiter, a shared one survives."""

from __future__ import annotations

import trio
import trio.testing

from homeserver.live.hub import Hub


async def test_dropping_a_waiter_keeps_it_for_other_polls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub("t", bytes)
    woken = []

    async def poll(patience: float) -> None:
        waiter = hub.waiter("alice")
        with trio.move_on_after(patience):
            await waiter.wait()
            woken.append(patience)
        if not waiter.is_set():
            hub.drop_waiter("alice", waiter)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, 1.0)
        nursery.start_soon(poll, 10.0)
        await trio.sleep(2)  # the short poll has timed out and tried to drop
        assert "alice" in hub._waiters  # still held for the long poll
        hub._waiters.pop("alice").set()  # what publishing to alice does
    assert woken == [10.0]
    hub.drop_waiter("alice", trio.Event())
    assert hub._waiters == {}
