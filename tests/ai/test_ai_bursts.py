"""Many AIs answering one message at once: the finals lane, shared timers and counts.

The pieces that keep a round of simultaneous answers from landing on the loop in
one burst (bench/RESULTS.md, "AI rooms: what the tail of normal sends was made
of"): final events through a narrow lane, chunk flushers on shared millisecond
timers, and ``dev/echo`` counting a shared context once. None may change the wire.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import trio
import trio.testing

from bridges.models.echo import WordCounts, word_count
from bridges.ticks import Ticks
from homeserver.ai import runner
from homeserver.ai.chunks import ChunkStream
from tests.ai.ai_support import Env, ai_message, ai_server, open_ws, recv

INTERVAL = 0.1


async def _stream_words(ticks: Ticks, words: int, gap: float) -> list[float]:
    sent: list[tuple[float, dict[str, Any]]] = []

    def send(frame: dict[str, Any]) -> None:
        sent.append((trio.current_time(), frame))

    chunks = ChunkStream(
        send,
        lambda seq, delta: {"seq": seq, "delta": delta},
        interval=INTERVAL,
        sleep_until=ticks.sleep_until,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chunks.run_flusher)
        for i in range(words):
            chunks.add(f"w{i} ")
            await trio.sleep(gap)
        nursery.cancel_scope.cancel()
    chunks.flush()
    assert "".join(f["delta"] for _, f in sent) == "".join(f"w{i} " for i in range(words))
    assert [f["seq"] for _, f in sent] == list(range(len(sent)))
    return [t for t, _ in sent]


def test_flushers_on_shared_ticks_keep_the_interval_and_share_one_timer() -> None:
    async def main() -> tuple[list[list[float]], int]:
        ticks = Ticks()
        results: list[list[float]] = []
        pending: list[int] = []

        async def one() -> None:
            results.append(await _stream_words(ticks, words=60, gap=0.005))

        async def watch() -> None:
            while True:
                pending.append(ticks.pending)
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as streams:
                for _ in range(3):
                    streams.start_soon(one)
            nursery.cancel_scope.cancel()
        return results, max(pending)

    # A mock clock: the assertions are about virtual time, never the machine's.
    results, most_ticks = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for times in results:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) > 2
        # the last frame is the final flush (any time); every timed one keeps the interval
        assert all(g >= INTERVAL - 1e-9 for g in gaps[:-1]), gaps
    assert most_ticks == 1  # three flushers due in the same millisecond: one timer


def test_word_counts_match_word_count_and_stay_bounded() -> None:
    counts = WordCounts(entries=3, longest=40)
    texts = ["a b  c", "one\ttwo\nthree four", "", "x " * 30, "solo", "a b  c"]
    for text in texts:
        assert counts(text) == word_count(text)
        assert counts(text) == word_count(text)  # remembered (or, if too long, recounted)
    assert "x " * 30 not in counts._counts  # longer than `longest`: not kept
    assert len(counts._counts) <= 3


async def test_more_ais_than_the_finals_lane_each_store_one_answer_after_their_chunks(
    tmp_path: Path,
) -> None:
    count = runner.FINALS_AT_ONCE * 2 + 1
    async with ai_server(tmp_path / "data") as env:
        await _many_answer_at_once(env, count)


async def _many_answer_at_once(env: Env, count: int) -> None:
    ais = [await env.ai(f"ai{i}") for i in range(count)]
    body = {"name": "crowd", "initial_members": [{"type": "bot", "id": a} for a in ais]}
    room = (await env.api.ok("POST", "/v1/rooms", env.admin, status=201, json=body))["id"]
    async with open_ws(env.running, env.admin) as ws:
        sent = await env.api.ok(
            "POST",
            f"/v1/rooms/{room}/messages",
            env.admin,
            status=201,
            json={
                "content": "all of you, one two three four five",
                "mention": [{"type": "bot", "id": a} for a in ais],
            },
        )
        frames: list[dict[str, Any]] = []
        done = 0
        while done < count:
            frame = await recv(ws)
            frames.append(frame)
            if frame["type"] == "swp.ai.status" and frame["status"] in ("done", "error"):
                done += 1
    for ai in ais:
        answer = ai_message(frames, ai)
        assert len(answer) == 1, ai
        content = answer[0]["content"]
        draft = content["ai"]["draft_id"]
        assert content["reply_to_event_id"] == sent["id"]
        mine = [
            (i, f)
            for i, f in enumerate(frames)
            if f.get("draft_id") == draft and f["type"] != "swp.room.message"
        ]
        statuses = [f["status"] for _, f in mine if f["type"] == "swp.ai.status"]
        assert statuses == ["thinking", "streaming", "done"]
        chunks = [(i, f) for i, f in mine if f["type"] == "swp.room.message.chunk"]
        assert [f["seq"] for _, f in chunks] == list(range(len(chunks)))
        assert "".join(f["delta"] for _, f in chunks) == content["body"]
        event_at = frames.index(answer[0])
        assert all(i < event_at for i, _ in chunks)  # every chunk before the event
        done_at = next(i for i, f in mine if f.get("status") == "done")
        assert event_at < done_at
