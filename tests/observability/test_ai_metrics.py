"""The AI series move when a model is called (every feature goes through MeteredModels):
generations in flight, time to first token, upstream errors by code."""

from __future__ import annotations

import socket
from pathlib import Path

from conf.sections import BackendSettings, ModelEntry, ModelsSettings
from tests.observability.test_metrics import scrape, total
from tests.support import api_for, make_settings, start_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_session_reply_and_an_upstream_failure_are_counted(tmp_path: Path) -> None:
    down = BackendSettings(
        name="down",
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        timeout_s=5.0,
        models=(ModelEntry("down/model", "m", "Down"),),
    )
    settings = make_settings(
        tmp_path / "data", models=ModelsSettings(dev_echo_delay_ms=0, backends=(down,))
    )
    async with start_server(settings) as running, api_for(running) as api:
        alice = await api.register("alice")
        before = await scrape(api)
        for model in ("dev/echo", "down/model"):
            sess = await api.ok("POST", "/v1/sessions", alice, status=201, json={"model": model})
            await api.call(
                "POST", f"/v1/sessions/{sess['id']}/messages", alice, json={"content": "hi there"}
            )
        after = await scrape(api)
    ttft = "homeserver_ai_time_to_first_token_seconds_count"
    assert total(after, ttft) == total(before, ttft) + 1  # only dev/echo sent a token
    errors = "homeserver_ai_upstream_errors_total"
    assert total(after, errors, code="MODEL_UNAVAILABLE") == 1
    assert total(after, "homeserver_ai_generations_in_flight") == 0
