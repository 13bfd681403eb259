"""Connection-level limits (issue 9, defects 5 and 6), over raw sockets.

- Slowloris: a request head dribbled in (first request, a later keep-alive
  request, the WebSocket handshake) is closed once the whole head has taken
  ``HEAD_TIMEOUT``; a head over ``MAX_HEAD`` is refused 431. Both are counted.
- A client closing an idle keep-alive connection gets its socket released at
  once, not after the 75 s keep-alive timeout.
- An over-limit body on a route that takes none (``/join``) is refused 413
  before the handler acts, and the connection still carries the next request.

``HEAD_TIMEOUT`` is lowered for these tests; nothing here measures time: each
wait is a generous upper bound that only a hang would reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import h11
import pytest
import trio

from homeserver import listener
from homeserver.app import Running
from tests.support import Api, api_for, make_settings, start_server

HEAD_TIMEOUT = 0.5
BOUND = 10.0  # far beyond HEAD_TIMEOUT; reached only if the server never closes


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setattr(listener, "HEAD_TIMEOUT", HEAD_TIMEOUT)
    async with start_server(make_settings(tmp_path / "data")) as running:
        yield running


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    async with api_for(server) as client:
        yield client


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything until the server closes (EOF or reset)."""
    data = b""
    with trio.fail_after(BOUND):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk


async def dribble(stream: trio.SocketStream, data: bytes) -> bool:
    """Send one byte at a time, 0.1 s apart; False once the server closed on us."""
    for i in range(len(data)):
        try:
            await stream.send_all(data[i : i + 1])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        await trio.sleep(0.1)
    return True


class Http:
    """A raw HTTP/1.1 client (h11) on one connection."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", self.host), ("content-length", str(len(body))), *headers]
        await self.stream.send_all(
            self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        )
        if body:
            await self.stream.send_all(self.conn.send(h11.Data(data=body)))
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
        status, got, content = 0, {}, b""
        with trio.fail_after(BOUND):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    got = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    content += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return status, got, content


@pytest.fixture
async def connect(server: Running) -> AsyncIterator[Callable[[], Awaitable[trio.SocketStream]]]:
    """Open client connections; all closed at the end of the test."""
    opened: list[trio.SocketStream] = []

    async def open_one() -> trio.SocketStream:
        stream = await trio.open_tcp_stream(server.host, server.port)
        opened.append(stream)
        return stream

    yield open_one
    for stream in opened:
        await trio.aclose_forcefully(stream)


Connect = Callable[[], Awaitable[trio.SocketStream]]


# -- defect 5: slowloris and oversized heads -----------------------------------


@pytest.mark.parametrize("path", ["/health", "/v1/stream"])
async def test_dribbled_first_head_is_closed_and_counted(
    server: Running, connect: Connect, path: str
) -> None:
    stream = await connect()
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + b"X-Slow: " + b"a" * 200
    completed = await dribble(stream, head)
    assert not completed  # the server hung up long before the 20 s this would take
    reply = await read_all(stream)
    assert reply.startswith(b"HTTP/1.1 408") or reply == b""
    assert server.listener_stats.head_timeouts == 1


async def test_dribbled_head_of_a_later_keep_alive_request_is_closed(
    server: Running, connect: Connect
) -> None:
    stream = await connect()
    client = Http(stream, "x")
    status, _, _ = await client.request("GET", "/health")
    assert status == 200
    completed = await dribble(stream, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200)
    assert not completed
    await read_all(stream)
    assert server.http_stats.head_timeouts == 1


async def test_head_over_the_size_limit_is_refused_431(server: Running, connect: Connect) -> None:
    stream = await connect()
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (listener.MAX_HEAD + 10)
    await stream.send_all(head)
    reply = await read_all(stream)
    assert reply.startswith(b"HTTP/1.1 431")
    assert server.listener_stats.head_too_large == 1


async def test_many_slow_heads_are_all_closed(server: Running, connect: Connect) -> None:
    streams = [await connect() for _ in range(50)]
    for stream in streams:
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    async def wait_closed(stream: trio.SocketStream) -> None:
        await read_all(stream)

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(wait_closed, stream)
    assert server.listener_stats.head_timeouts == 50


# -- defect 6: EOF and ignored bodies ------------------------------------------


async def test_idle_keep_alive_connection_is_released_on_client_eof(
    server: Running, connect: Connect
) -> None:
    stream = await connect()
    status, _, _ = await Http(stream, "x").request("GET", "/health")
    assert status == 200
    await trio.sleep(0.3)  # let the server settle into keep-alive idle
    await stream.send_eof()
    # The server closes its side at once (before: only after keep_alive_timeout, 75 s).
    assert await read_all(stream) == b""
    assert server.http_stats.released_on_eof == 1


async def test_over_limit_body_on_join_is_413_and_the_connection_carries_on(
    server: Running, api: Api, connect: Connect
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, is_public=True)
    stream = await connect()
    client = Http(stream, "x")
    auth = (("authorization", f"Bearer {bob.access_token}"),)
    status, headers, body = await client.request(
        "POST", f"/v1/rooms/{room}/join", b"x" * (2 << 20), auth
    )
    assert status == 413, body
    assert b"SW_CONTENT_TOO_LARGE" in body
    assert headers.get("connection") != "close"
    # the same connection serves the next request
    status, _, body = await client.request("GET", "/v1/me", headers=auth)
    assert status == 200, body
    # and the refused join was never acted on
    r = await api.call("GET", f"/v1/rooms/{room}", bob)
    assert r.status_code == 403


async def test_small_body_on_a_route_that_takes_none_is_read_and_ignored(
    server: Running, api: Api, connect: Connect
) -> None:
    alice = await api.register("alice")
    stream = await connect()
    client = Http(stream, "x")
    auth = (("authorization", f"Bearer {alice.access_token}"),)
    room = await api.room(alice, is_public=True)
    status, _, _ = await client.request("POST", f"/v1/rooms/{room}/leave", b"y" * 5000, auth)
    assert status == 200
    status, _, _ = await client.request("GET", "/v1/me", headers=auth)
    assert status == 200


async def test_huge_declared_body_is_413_with_connection_close(
    server: Running, connect: Connect
) -> None:
    stream = await connect()
    await stream.send_all(
        b"POST /v1/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"z" * 1000
    )
    reply = await read_all(stream)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413")
    assert b"connection: close" in head
