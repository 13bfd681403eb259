"""End to end: ``homeserver serve`` as a process, session replies streamed with httpx over
the listener's fast path (homeserver/http/direct_sessions.py) and, for comparison, with it off."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e


def _events(lines: list[str]) -> tuple[str, bool, str | None]:
    text, done, reason = "", False, None
    for line in lines:
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            choice = json.loads(line[6:])["choices"][0]
            text += choice["delta"].get("content", "")
            reason = choice["finish_reason"] or reason
    return text, done, reason


@pytest.mark.parametrize("direct", ["true", "false"])
def test_streamed_turns_over_one_connection_equal_the_stored_replies(
    tmp_path: Path, direct: str
) -> None:
    server = ServerProcess(
        tmp_path / "data",
        tmp_path / "server.log",
        {"HOMESERVER_SESSIONS_DIRECT_SSE": direct, "HOMESERVER_MODELS_DEV_ECHO_DELAY_MS": "2"},
    )
    try:
        base = server.wait_ready()
        with httpx.Client(base_url=base, timeout=30) as setup:
            r = setup.post("/v1/auth/register", json={"username": "e2e", "password": "x" * 12})
            auth = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}
            sid = setup.post("/v1/sessions", headers=auth, json={"model": "dev/echo"}).json()[
                "data"
            ]["id"]
        # A fresh keep-alive client whose first request is a stream: with the fast path on,
        # every turn is served by it and the connection returns to the router in between.
        streamed = []
        with httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)) as c:
            for turn in range(3):
                with c.stream(
                    "POST",
                    f"/v1/sessions/{sid}/messages",
                    headers=auth,
                    json={"content": f"turn {turn} of three", "stream": True},
                ) as s:
                    assert s.status_code == 200
                    assert s.headers["content-type"].startswith("text/event-stream")
                    assert s.headers["x-request-id"].startswith("req_")
                    text, done, reason = _events(list(s.iter_lines()))
                assert (done, reason) == (True, "stop")
                streamed.append(text)
            gone = c.post("/v1/sessions/sess_nope/messages", headers=auth, json={"content": "x"})
            assert gone.status_code == 404
            assert gone.json()["error"]["code"] == "SESSION_NOT_FOUND"
            stored = c.get(f"/v1/sessions/{sid}", headers=auth).json()["data"]["messages"]
        assert streamed == [f"echo: turn {t} of three" for t in range(3)]
        assert [m["content"] for m in stored if m["role"] == "assistant"] == streamed
    finally:
        server.stop()
