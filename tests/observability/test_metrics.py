"""``GET /metrics``: the series exist, and a send over a stream connection moves them."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from websockets.trio.client import ClientConnection, connect

from homeserver.app import Running
from homeserver.observe.metrics import Metrics
from homeserver.observe.stats import LocalHistogram
from tests.support import Api, User, api_for, make_settings, start_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SERIES = (
    "homeserver_stream_connections_open",
    "homeserver_stream_connections_opened_total",
    "homeserver_stream_frames_sent_total",
    "homeserver_stream_bytes_sent_total",
    "homeserver_stream_slow_consumer_closes_total",
    "homeserver_stream_acked_sends_total",
    "homeserver_writer_batch_size_count",
    "homeserver_writer_batch_seconds_bucket",
    "homeserver_writer_fsync_seconds_count",
    "homeserver_http_requests_total",
    "homeserver_rate_limit_refusals_total",
    "homeserver_ai_generations_in_flight",
    "homeserver_ai_time_to_first_token_seconds_count",
)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


async def scrape(api: Api) -> Samples:
    r = await api.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


@asynccontextmanager
async def stream(server: Running, user: User) -> AsyncIterator[ClientConnection]:
    url = f"ws://{server.host}:{server.port}/v1/stream?token={user.access_token}"
    async with connect(url, compression=None, ping_interval=None, proxy=None) as ws:
        yield ws


async def frame_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return dict(frame)


async def test_a_stream_send_moves_the_counters(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    before = await scrape(api)
    assert set(SERIES) <= names(before), set(SERIES) - names(before)
    assert total(before, "homeserver_stream_connections_open") == 0

    async with stream(server, alice) as ws:
        await frame_of(ws, "hello")
        frame = {
            "type": "send",
            "req_id": "r1",
            "room_id": room,
            "content": {"msgtype": "swp.text", "body": "counted"},
        }
        await ws.send(json.dumps(frame))
        ack = await frame_of(ws, "ack")
        assert ack["req_id"] == "r1"
        during = await scrape(api)
    # The close is counted once the server has seen the connection end.
    for _ in range(1000):
        after = await scrape(api)
        if not total(after, "homeserver_stream_connections_open"):
            break
        await trio.sleep(0.01)

    assert total(during, "homeserver_stream_connections_open") == 1
    for name in (
        "homeserver_stream_connections_opened_total",
        "homeserver_stream_acked_sends_total",
        "homeserver_hub_events_published_total",
        "homeserver_writer_batch_size_count",
        "homeserver_writer_batch_seconds_count",
    ):
        assert total(during, name) >= total(before, name) + 1, name
    # hello + the room event + the ack at least, and their bytes.
    frames = "homeserver_stream_frames_sent_total"
    assert total(during, frames) >= total(before, frames) + 3
    sent = "homeserver_stream_bytes_sent_total"
    assert total(during, sent) > total(before, sent) + len("counted")
    assert total(after, "homeserver_stream_connections_closed_total") == 1
    assert total(after, "homeserver_stream_connections_closed_total", reason="peer_or_eof") == 1
    assert total(before, "homeserver_writer_fsync_seconds_count") == 0  # durability "normal"

    http = "homeserver_http_requests_total"
    created = {"method": "POST", "route": "/v1/rooms", "status": "201"}
    assert total(before, http, **created) == 1
    assert total(after, http, method="GET", route="/metrics", status="200") >= 2
    r = await api.call("GET", f"/v1/rooms/{room}x", alice)
    assert r.status_code in (403, 404)
    again = await scrape(api)
    assert total(again, http, route="/v1/rooms/{room_id}", status=str(r.status_code)) == 1
    assert total(again, "homeserver_http_request_duration_seconds_count", route="/v1/rooms") == 1


async def test_rate_limit_refusals_are_counted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_messages=1)
    async with start_server(settings) as running, api_for(running) as api:
        bob = await api.register("bob")
        room = await api.room(bob)
        await api.send(bob, room)
        r = await api.call(
            "POST",
            f"/v1/rooms/{room}/send",
            bob,
            json={"content": {"msgtype": "swp.text", "body": "one too many"}},
        )
        assert r.status_code == 429
        samples = await scrape(api)
    assert total(samples, "homeserver_rate_limit_refusals_total", limit="messages") == 1
    assert total(samples, "homeserver_rate_limit_refusals_total", limit="media_uploads") == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_on_their_own_port_or_off(tmp_path: Path) -> None:
    port = _free_port()
    settings = make_settings(tmp_path / "a", metrics_port=port)
    async with start_server(settings) as running, api_for(running) as api:
        assert running.metrics_port == port
        assert (await api.client.get("/metrics")).status_code == 404
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as side:
            r = await side.get("/metrics")
            assert r.status_code == 200
            assert "homeserver_stream_connections_open 0.0" in r.text
            assert (await side.get("/v1/openapi.json")).status_code == 404
    async with (
        start_server(make_settings(tmp_path / "b", metrics_enabled=False)) as running,
        api_for(running) as api,
    ):
        assert (await api.client.get("/metrics")).status_code == 404
        # Still counted (the AI modules record into it whatever the setting), just not served.
        assert running.metrics is not None
        assert b"homeserver_http_requests_total" in running.metrics.exposition()[0]


def test_registries_are_per_server() -> None:
    one, two = Metrics(), Metrics()
    one.upstream_errors.labels("UPSTREAM_TIMEOUT").inc()
    assert "UPSTREAM_TIMEOUT" in one.exposition()[0].decode()
    assert "UPSTREAM_TIMEOUT" not in two.exposition()[0].decode()


def test_local_histogram_is_cumulative() -> None:
    h = LocalHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4
    assert h.sum == 3.65
