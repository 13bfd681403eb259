"""The SSE body of a reply (homeserver.http.sse.follow_reply), in process on a mock clock:
which writes it makes, that coalesced writes share timers, and the bytes of every chunk."""

from __future__ import annotations

import trio
import trio.testing

from bridges.ticks import Ticks
from homeserver.http.sse import COALESCE_S, follow_reply
from homeserver.sessions import Generation
from protocol.llm import Usage
from protocol.sse import DONE, chunk, encode_data


def _gen(message_id: str = "msg_1") -> Generation:
    return Generation("sess_1", message_id, "msg_0", "dev/echo", 1700000000)


def _content(gen: Generation, text: str) -> bytes:
    return encode_data(chunk(gen.message_id, gen.created, gen.model, content=text))


async def _drain(gen: Generation, ticks: Ticks, writes: list[tuple[float, bytes]]) -> None:
    async for out in follow_reply(gen, heartbeat=15, ticks=ticks):
        writes.append((trio.current_time(), out))


async def test_fast_deltas_share_a_write_and_the_first_is_not_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gen, ticks = _gen(), Ticks()
    writes: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, gen, ticks, writes)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        gen.append("a")
        await trio.testing.wait_all_tasks_blocked()
        for text in ("b", "c", "d"):  # within one coalescing window
            await trio.sleep(0.001)
            gen.append(text)
        await trio.sleep(0.05)
        gen.append("e")
        await trio.sleep(0.05)
        gen.finish("stop", Usage(1, 5))
    role = encode_data(chunk("msg_1", gen.created, "dev/echo", role="assistant", content=""))
    end = encode_data(
        chunk("msg_1", gen.created, "dev/echo", finish_reason="stop", usage=gen.usage)
    )
    assert [out for _, out in writes] == [
        role,
        _content(gen, "a"),
        _content(gen, "b") + _content(gen, "c") + _content(gen, "d"),
        _content(gen, "e"),
        end + DONE,
    ]
    assert writes[1][0] == start  # the first delta goes out at once
    # the others waited for the window after the previous write (to the millisecond)
    assert start + COALESCE_S <= writes[2][0] <= start + COALESCE_S + 0.001
    assert ticks.pending == 0


async def test_many_streams_coalescing_at_once_share_one_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = Ticks()
    gens = [_gen(f"msg_{i}") for i in range(20)]
    writes: list[list[tuple[float, bytes]]] = [[] for _ in gens]
    async with trio.open_nursery() as nursery:
        for gen, out in zip(gens, writes, strict=True):
            nursery.start_soon(_drain, gen, ticks, out)
        for text in ("x", "y"):  # the second delta of every stream waits for the window
            for gen in gens:
                gen.append(text)
            await trio.testing.wait_all_tasks_blocked()
        assert ticks.pending == 1
        for gen in gens:
            gen.finish("stop", Usage(1, 2))
    for gen, out in zip(gens, writes, strict=True):
        body = b"".join(data for _, data in out)
        assert _content(gen, "x") + _content(gen, "y") in body
        assert body.endswith(DONE)
    assert ticks.pending == 0


async def test_a_reply_that_ends_while_coalescing_is_written_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gen, ticks = _gen(), Ticks()
    writes: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, gen, ticks, writes)
        await trio.testing.wait_all_tasks_blocked()
        gen.append("a")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        gen.append("b")
        gen.finish("length", Usage(1, 2))
    assert writes[-1][0] == start
    assert writes[-1][1].startswith(_content(gen, "b"))
    assert writes[-1][1].endswith(DONE)
