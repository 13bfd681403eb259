"""``log_format = "json"``: every log line is JSON; one per request and per stream lifecycle."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"HOMESERVER_LOG_FORMAT": "json", "HOMESERVER_LOG_LEVEL": "warning"}
    proc = ServerProcess(tmp_path / "data", tmp_path / "server.log", env)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def lines(server: ServerProcess) -> list[dict[str, Any]]:
    out = []
    for line in server.log_text().splitlines():
        parsed = json.loads(line)  # every line, not only access lines
        assert isinstance(parsed, dict)
        assert {"ts", "level", "logger", "msg"} <= set(parsed), parsed
        out.append(parsed)
    return out


def wait_for(server: ServerProcess, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in lines(server) if match(line)]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, lines(server)
        time.sleep(0.02)


def test_one_json_line_per_request_and_per_stream_connection(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/v1/auth/register", json={"username": "carol", "password": "pw-carol-1"})
        assert r.status_code == 201
        rid = r.json()["meta"]["request_id"]
        assert r.headers["X-Request-Id"] == rid
        token = r.json()["data"]["access_token"]
        participant = r.json()["data"]["participant_id"]
        missing = client.get("/v1/rooms/room-nope", headers={"Authorization": f"Bearer {token}"})
        assert missing.status_code in (403, 404)
        missing_rid = missing.json()["meta"]["request_id"]

    line = wait_for(server, lambda x: x.get("request_id") == rid)
    assert line["kind"] == "http"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/auth/register"
    assert line["path"] == "/v1/auth/register"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    error_line = wait_for(server, lambda x: x.get("request_id") == missing_rid)
    assert error_line["route"] == "/v1/rooms/{room_id}"
    assert error_line["status"] == missing.status_code

    ws_url = server.base_url.replace("http://", "ws://") + f"/v1/stream?token={token}"
    with connect(ws_url, compression=None) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello"
    session = hello["session_id"]
    opened = wait_for(server, lambda x: x.get("session_id") == session and x["phase"] == "open")
    closed = wait_for(server, lambda x: x.get("session_id") == session and x["phase"] == "close")
    assert opened["kind"] == closed["kind"] == "stream"
    assert opened["participant_id"] == closed["participant_id"] == participant
    assert closed["close_code"] == 1000
    assert closed["duration_ms"] >= 0
    assert "reason" in closed
