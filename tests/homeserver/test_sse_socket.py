"""The write-through SSE writer (homeserver/http/sse_socket.py) on a real socket pair:
a delta reaches the socket inside ``Generation.append`` (no task switch), a slow reader
holds one pending write (not the reply), a peer that goes away changes nothing for the
generation, heartbeats come only before the first token."""

from __future__ import annotations

import socket

import h11
import trio
import trio.testing

from homeserver.http.sse import ReplyBody
from homeserver.http.sse_socket import SocketWriter, frame
from homeserver.identity.auth import Principal
from homeserver.sessions import Generation
from protocol.llm import Usage
from protocol.sse import DONE, KEEPALIVE
from tests.homeserver.sessions_support import Sse, feed

HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
PRINCIPAL = Principal(participant_id="p1", token_key="k", via="access")


def _pair() -> tuple[trio.SocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


def _gen() -> Generation:
    return Generation("sess_1", "msg_1", "msg_0", "dev/echo", 1700000000)


def _decode(raw: bytes) -> tuple[bytes, bool]:
    """The body of a chunked response (h11 checks the framing) and whether it ended."""
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
    parser.send(h11.EndOfMessage())
    parser.receive_data(raw)
    body = bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            return bytes(body), False
        if isinstance(event, h11.Data):
            body += event.data
        if isinstance(event, h11.EndOfMessage):
            return bytes(body), True


def _recv_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def _sse(body: bytes) -> Sse:
    sse = Sse()
    for block in body.decode().split("\n\n"):
        feed(sse, block)
    return sse


async def test_a_delta_is_on_the_socket_when_append_returns() -> None:
    conn, peer = _pair()
    gen = _gen()
    writer = SocketWriter(conn, ReplyBody(gen), heartbeat=15, principal=PRINCIPAL)
    done: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            done.append(await writer.run(HEAD))

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        opening = _recv_all(peer)
        assert opening == HEAD + frame(ReplyBody(_gen()).opening())
        gen.append("hello")  # no checkpoint between this and the read: written through
        assert _recv_all(peer) == frame(_content("hello"))
        gen.append(" world")
        gen.finish("stop", Usage(1, 2))
        rest = _recv_all(peer)  # the last delta and the end, written by finish() itself
        assert rest.endswith(DONE + b"\r\n0\r\n\r\n")
    assert done == [True]
    body, ended = _decode(opening + frame(_content("hello")) + rest)
    assert ended
    sse = _sse(body)
    assert (sse.text, sse.done, sse.finish_reason) == ("hello world", True, "stop")
    assert gen._listeners == []
    peer.close()
    await conn.aclose()


def _content(text: str) -> bytes:
    body = ReplyBody(_gen())
    body.gen.parts.append(text)
    return body.take()


def _content_frame(text: str) -> bytes:
    return frame(_content(text))


async def test_a_slow_reader_holds_one_write_and_gets_everything_in_order() -> None:
    conn, peer = _pair()
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    gen = _gen()
    body = ReplyBody(gen)
    writer = SocketWriter(conn, body, heartbeat=15, principal=PRINCIPAL)
    words = [f" w{i:05d}" * 10 for i in range(3000)]  # ~210 KB of chunks, far over the buffers
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, HEAD)
        await trio.testing.wait_all_tasks_blocked()
        for word in words:
            gen.append(word)
        await trio.testing.wait_all_tasks_blocked()
        # Nobody read: the writer is stuck in one write; the rest stays in gen.parts only.
        assert body.index < len(words) // 2
        gen.finish("stop", Usage(1, len(words)))
        with trio.fail_after(10):
            while True:
                received += _recv_all(peer)
                whole, ended = _decode(bytes(received))
                if ended:
                    break
                await trio.sleep(0.001)
    sse = _sse(whole)
    assert sse.text == "".join(words)
    assert sse.done
    assert sse.finish_reason == "stop"
    peer.close()
    await conn.aclose()


async def test_a_peer_that_goes_away_ends_the_writer_not_the_generation() -> None:
    conn, peer = _pair()
    gen = _gen()
    writer = SocketWriter(conn, ReplyBody(gen), heartbeat=15, principal=PRINCIPAL)
    done: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            done.append(await writer.run(HEAD))

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        gen.append("a")
        peer.close()
        await trio.testing.wait_all_tasks_blocked()
    assert done == [False]
    assert gen._listeners == []
    gen.append("b")  # the generation carries on: nothing listens, nothing raises
    gen.finish("stop", Usage(1, 2))
    assert gen.text == "ab"
    await conn.aclose()


async def test_heartbeats_only_before_the_first_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn, peer = _pair()
    gen = _gen()
    writer = SocketWriter(conn, ReplyBody(gen), heartbeat=1.0, principal=PRINCIPAL)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, HEAD)
        await trio.sleep(3.5)
        before = _recv_all(peer)
        gen.append("x")
        await trio.sleep(5)
        after = _recv_all(peer)
        gen.finish("stop", Usage(1, 1))
    assert before.count(KEEPALIVE) == 3
    assert KEEPALIVE not in after
    peer.close()
    await conn.aclose()
