"""homeserver.http.sse_socket.write_events on a socket pair: chunked framing, what the
client sends meanwhile, a slow reader, and a peer that goes away mid-stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import h11
import trio

from homeserver.http.sse_socket import write_events

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


def _parse(raw: bytes) -> tuple[h11.Response, bytes, bool]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target="/", headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response, body, ended = None, bytearray(), False
    while (event := client.next_event()) is not h11.NEED_DATA:
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            ended = True
            break
    assert response is not None
    return response, bytes(body), ended


async def _read_all(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some(65536):
        out += data
    return bytes(out)


async def test_every_event_is_one_chunk_and_the_end_is_the_last_chunk() -> None:
    server, client = await _pair()

    async def events() -> AsyncGenerator[bytes, None]:
        for i in range(3):
            yield b"event: token\ndata: %d\n\n" % i
            await trio.lowlevel.checkpoint()

    await client.send_all(b"GET /next HTTP/1.1\r\n")  # a pipelined next request, in part
    complete, leftover = await write_events(server, HEAD, events())
    assert complete
    assert leftover == b"GET /next HTTP/1.1\r\n"
    await server.aclose()
    response, body, ended = _parse(await _read_all(client))
    await client.aclose()
    assert response.status_code == 200
    assert ended
    assert body == b"".join(b"event: token\ndata: %d\n\n" % i for i in range(3))


async def test_a_slow_reader_holds_the_producer_back_and_loses_nothing() -> None:
    server, client = await _pair()
    produced = 0
    big = b"x" * 65536

    async def events() -> AsyncGenerator[bytes, None]:
        nonlocal produced
        for _ in range(64):  # 4 MiB: more than the socket buffers hold
            produced += 1
            yield big

    async with trio.open_nursery() as nursery:
        result: list[tuple[bool, bytes]] = []

        async def write() -> None:
            result.append(await write_events(server, HEAD, events()))
            await server.aclose()

        nursery.start_soon(write)
        await trio.sleep(0.05)
        assert produced < 64  # nobody reads yet: the writer waits in send_all
        raw = await _read_all(client)
    await client.aclose()
    assert result == [(True, b"")]
    _, body, ended = _parse(raw)
    assert ended
    assert body == big * 64


async def test_a_peer_that_goes_away_cancels_the_producer() -> None:
    server, client = await _pair()
    seen: list[str] = []

    async def events() -> AsyncGenerator[bytes, None]:
        try:
            yield b"event: start\n\n"
            await trio.sleep_forever()  # waiting for the model
        except trio.Cancelled:
            seen.append("cancelled")
            raise
        finally:
            seen.append("closed")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            result: list[tuple[bool, bytes]] = []

            async def write() -> None:
                result.append(await write_events(server, HEAD, events()))

            nursery.start_soon(write)
            assert b"event: start" in await client.receive_some(65536)
            await client.aclose()
    await server.aclose()
    assert result == [(False, b"")]
    assert seen == ["cancelled", "closed"]
