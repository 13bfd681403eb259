"""The single writer: group commit, per-job rollback, persist-then-publish."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from homeserver.store.sqlite import SqliteWriter as Writer
from protocol.events import Event
from storage import db
from storage import events as event_store
from tests.storage.writer_jobs import append_message, make_room


def _fail_after_send(conn: sqlite3.Connection, room_id: str) -> Event:
    append_message(conn, room_id, -1)
    raise ValueError("this job fails after writing")


async def test_batches_commit_together_and_a_failing_job_rolls_back_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    writer = Writer(path, synchronous="full", max_batch=64)
    writer.open()
    published: list[Event] = []

    def on_commit(events: Sequence[Event]) -> None:
        published.extend(events)

    writer.set_on_commit(on_commit)
    results: dict[int, Event] = {}
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await writer.write(make_room, "room-a")

            async def one(n: int) -> None:
                event = await writer.write(append_message, "room-a", n)
                # Persist, then publish, then answer.
                assert event.event_id in {e.event_id for e in published}
                results[n] = event

            async def failing() -> None:
                with pytest.raises(ValueError, match="fails after writing"):
                    await writer.write(_fail_after_send, "room-a")

            async with trio.open_nursery() as senders:
                for n in range(20):
                    senders.start_soon(one, n)
                senders.start_soon(failing)
                for n in range(20, 40):
                    senders.start_soon(one, n)
            nursery.cancel_scope.cancel()
    finally:
        writer.close()

    assert len(results) == 40
    assert writer.stats.largest_batch > 1, writer.stats
    assert writer.stats.failed_commits == 0
    positions = [e.stream_position for e in published]
    assert positions == sorted(positions)
    assert len(set(positions)) == 40
    assert writer.published_position == positions[-1]

    # A fresh connection sees exactly the 40 acknowledged events, chained,
    # and nothing of the failed job.
    check = db.connect(path, readonly=True)
    try:
        stored = event_store.room_history(
            check, "room-a", from_pos=None, direction="forward", limit=1000
        )
    finally:
        check.close()
    assert sorted(e.content["n"] for e in stored) == list(range(40))
    assert [e.depth for e in stored] == list(range(1, 41))
    for before, after in itertools.pairwise(stored):
        assert after.prev_event_ids == (before.event_id,)
    assert {e.event_id for e in stored} == {e.event_id for e in results.values()}
