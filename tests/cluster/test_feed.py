"""The cluster feed's gap/duplicate rule (protocol.cluster) and ClusterFeed itself:
random deliveries with drops, duplicates, reorders and positions-only batches;
the hub must see every position exactly once, in order."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.cluster.bus import MemoryBus
from homeserver.cluster.feed import ClusterFeed
from homeserver.live.hub import Hub
from protocol.cluster import (
    Batch,
    BusMessageError,
    FeedCursor,
    decode_batch,
    encode_batch,
)
from protocol.events import Event, EventDraft, EventType, build_event


def make_event(position: int) -> Event:
    draft = EventDraft("!r:x", EventType.MESSAGE, "@a:x", "@a:x", {"body": f"m{position}"})
    return build_event(
        draft, stream_position=position, origin_ts_ms=position, prev_event_ids=(), prev_depth=0
    )


def split(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = sorted({c for c in cuts if 0 < c < total})
    edges = [0, *bounds, total]
    return list(itertools.pairwise(edges))


class RecordingHub(Hub):
    def __init__(self) -> None:
        super().__init__("t", lambda b: b)
        self.seen: list[int] = []

    def publish_events(self, events):  # type: ignore[no-untyped-def]
        self.seen.extend(e.stream_position for e in events)
        super().publish_events(events)


deliveries = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 2), st.booleans()), min_size=1, max_size=40
)


def test_codec_round_trip() -> None:
    batch = Batch.of("n1", [make_event(4), make_event(5)])
    assert decode_batch(encode_batch(batch)) == batch
    big = Batch.of("n1", [make_event(p) for p in range(1, 200)])
    assert decode_batch(encode_batch(big)).events is None


@pytest.mark.parametrize(
    "data",
    [b"nope", b"[]", b'{"prev": 3, "last": 3}', b'{"prev": 0, "last": 2, "events": [{}]}'],
)
def test_bad_messages_are_refused(data: bytes) -> None:
    with pytest.raises(BusMessageError):
        decode_batch(data)


def test_cursor_rules() -> None:
    cursor = FeedCursor(5)
    assert cursor.plan(Batch("n", 3, 5, None)) is None  # at or below applied: drop
    plan = cursor.plan(Batch("n", 7, 8, (make_event(8),)))
    assert plan is not None
    assert (plan.read_after, plan.read_upto) == (5, 7)
    assert cursor.take([make_event(4), make_event(6), make_event(8)]) == [make_event(6)]
    assert cursor.applied == 6


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 60), cuts=st.lists(st.integers(1, 59)), plan=deliveries)
def test_cursor_sees_every_position_once(total: int, cuts: list[int], plan: list) -> None:  # type: ignore[type-arg]
    """Pure model: the database holds 1..total; batches arrive dropped, twice, reordered."""
    batches = split(total, cuts)
    order: list[Batch] = []
    for index, (times, _, positions_only) in zip(range(len(batches)), plan * 60, strict=False):
        prev, last = batches[index]
        events = None if positions_only else tuple(make_event(p) for p in range(prev + 1, last + 1))
        order += [Batch("n", prev, last, events)] * (times % 3)
    random.Random(total).shuffle(order)
    cursor = FeedCursor(0)
    seen: list[int] = []

    def read(after: int, upto: int) -> None:
        seen.extend(
            e.stream_position
            for e in cursor.take(make_event(p) for p in range(after + 1, upto + 1))
        )

    for batch in order:
        step = cursor.plan(batch)
        if step is None:
            continue
        if step.reads:
            read(step.read_after, step.read_upto)
        seen.extend(e.stream_position for e in cursor.take(step.events))
    head = cursor.plan_head(total)  # the watchdog at the end
    if head is not None:
        read(head.read_after, head.read_upto)
    assert seen == list(range(1, total + 1))


async def run_feed(total: int, order: list[Batch], *, bus_down: bool = False) -> list[int]:
    hub = RecordingHub()
    bus = MemoryBus()
    reads: list[tuple[int, int]] = []

    async def read_range(after: int, upto: int) -> list[Event]:
        await trio.lowlevel.checkpoint()
        reads.append((after, upto))
        return [make_event(p) for p in range(after + 1, min(upto, after + 7) + 1)]

    async def read_head() -> int:
        await trio.lowlevel.checkpoint()
        return total

    feed = ClusterFeed(
        bus,
        hub,
        node_id="me",
        channel="c",
        read_range=read_range,
        read_head=read_head,
        applied=0,
        watchdog=1.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.testing.wait_all_tasks_blocked()
        for batch in order:
            await bus.publish("c", encode_batch(batch))
            if random.Random(batch.last).random() < 0.3:
                await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(2.0)  # the watchdog reads the head
        assert feed.applied == total
        assert feed.lag == 0
        nursery.cancel_scope.cancel()
    return hub.seen


@settings(max_examples=25, deadline=None)
@given(total=st.integers(1, 40), cuts=st.lists(st.integers(1, 39)), plan=deliveries)
def test_feed_sees_every_position_once(total: int, cuts: list[int], plan: list) -> None:  # type: ignore[type-arg]
    batches = split(total, cuts)
    order: list[Batch] = []
    for (prev, last), (times, _, positions_only) in zip(batches, plan * 40, strict=False):
        events = None if positions_only else tuple(make_event(p) for p in range(prev + 1, last + 1))
        order += [Batch("other", prev, last, events)] * (times % 3)
    random.Random(total * 7).shuffle(order)
    seen = trio.run(run_feed, total, order, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == list(range(1, total + 1))


async def test_local_commits_reach_the_hub_before_the_caller_is_answered() -> None:
    hub = RecordingHub()
    bus = MemoryBus()

    async def never(after: int, upto: int) -> list[Event]:
        raise AssertionError("no read expected")

    async def head() -> int:
        return 0

    feed = ClusterFeed(
        bus, hub, node_id="me", channel="c", read_range=never, read_head=head, applied=0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.testing.wait_all_tasks_blocked()
        feed.on_commit([make_event(1), make_event(2)])
        assert hub.seen == [1, 2]  # synchronously, in the writer's callback
        await trio.testing.wait_all_tasks_blocked()
        assert bus.published == 1
        nursery.cancel_scope.cancel()


async def test_bus_loss_is_caught_up_from_the_database(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = RecordingHub()
    bus = MemoryBus()
    head = 0

    async def read_range(after: int, upto: int) -> list[Event]:
        return [make_event(p) for p in range(after + 1, upto + 1)]

    async def read_head() -> int:
        return head

    feed = ClusterFeed(
        bus, hub, node_id="me", channel="c", read_range=read_range, read_head=read_head, applied=0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        await trio.sleep(0.1)
        bus.fail()
        head = 5  # another process committed 1..5 while the bus was down
        await trio.sleep(1)
        bus.restore()
        await trio.sleep(3)
        assert hub.seen == [1, 2, 3, 4, 5]
        assert feed.stats.reconnects >= 1
        nursery.cancel_scope.cancel()
