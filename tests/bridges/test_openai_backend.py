"""The OpenAI-compatible backend against a real upstream on a real socket (CONTRACT 10)."""

from __future__ import annotations

import contextlib
import socket

import pytest
import trio

from bridges.models import Delta, Finish, OpenAIBackend, StreamItem
from conf.sections import BackendSettings, ModelEntry
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, Usage, estimate_prompt_tokens, estimate_tokens
from tests.support_upstream import Behaviour, Upstream, running_upstream

PROMPT = [ChatMessage("system", "be brief"), ChatMessage("user", "hi")]


def _backend(base_url: str, model: str = "m", timeout_s: float = 5.0, **kw: str) -> OpenAIBackend:
    return OpenAIBackend(
        BackendSettings(
            name="up",
            base_url=base_url,
            timeout_s=timeout_s,
            models=(ModelEntry(model, model, model),),
            **kw,
        )
    )


async def _collect(backend: OpenAIBackend, model: str = "m") -> list[StreamItem]:
    entry = ModelEntry(model, model, model)
    async with contextlib.aclosing(backend.stream_chat(PROMPT, entry, 64, 0.5)) as items:
        return [item async for item in items]


async def _code(backend: OpenAIBackend, model: str = "m") -> ApiError:
    with pytest.raises(ApiError) as info:
        await _collect(backend, model)
    return info.value


async def test_streams_deltas_and_reported_usage_and_sends_the_openai_request() -> None:
    async with running_upstream() as up:
        items = await _collect(_backend(up.base_url, api_key="sk-test"))
        assert items == [
            Delta("Hello"),
            Delta(" there"),
            Delta(", friend"),
            Finish("stop", Usage(11, 3)),
        ]
        seen = up.requests[0]
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == "Bearer sk-test"
        assert seen.body["stream"] is True
        assert seen.body["stream_options"] == {"include_usage": True}
        assert seen.body["model"] == "m"
        assert seen.body["max_tokens"] == 64
        assert seen.body["temperature"] == 0.5
        assert seen.body["messages"] == [m.to_dict() for m in PROMPT]


async def test_usage_is_estimated_when_the_upstream_reports_none() -> None:
    async with running_upstream() as up:
        up.default = Behaviour(usage=None, finish_reason="length")
        items = await _collect(_backend(up.base_url))
        expected = Usage(estimate_prompt_tokens(PROMPT), estimate_tokens("Hello there, friend"))
        assert items[-1] == Finish("length", expected)


async def test_api_key_env_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_upstream() as up:
        backend = _backend(up.base_url, api_key_env="TEST_UPSTREAM_KEY")
        monkeypatch.setenv("TEST_UPSTREAM_KEY", "from-env")
        await _collect(backend)
        assert up.requests[0].headers["authorization"] == "Bearer from-env"


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour(status=500), ErrorCode.BACKEND_ERROR),
        (Behaviour(status=502), ErrorCode.BACKEND_ERROR),
        (Behaviour(status=404), ErrorCode.MODEL_UNAVAILABLE),
        (Behaviour(status=401), ErrorCode.MODEL_UNAVAILABLE),
        (Behaviour(status=429), ErrorCode.MODEL_UNAVAILABLE),
        (Behaviour(break_after=1), ErrorCode.BACKEND_ERROR),
        (Behaviour(malformed_after=1), ErrorCode.BACKEND_ERROR),
        (Behaviour(content_type="application/json"), ErrorCode.BACKEND_ERROR),
        (Behaviour(send_done=False, finish_reason="", usage=None), ErrorCode.BACKEND_ERROR),
    ],
)
async def test_upstream_failures_map_to_model_codes(behaviour: Behaviour, code: object) -> None:
    async with running_upstream() as up:
        up.default = behaviour
        error = await _code(_backend(up.base_url))
        assert error.code is code
        assert "Traceback" not in error.message


async def test_a_stream_breaking_midway_yields_what_came_first() -> None:
    async with running_upstream() as up:
        up.default = Behaviour(break_after=2)
        got: list[str] = []
        entry = ModelEntry("m", "m", "m")

        async def read() -> None:
            async with contextlib.aclosing(
                _backend(up.base_url).stream_chat(PROMPT, entry, 64, None)
            ) as items:
                async for item in items:
                    assert isinstance(item, Delta)
                    got.append(item.text)

        with pytest.raises(ApiError) as info:
            await read()
        assert info.value.code is ErrorCode.BACKEND_ERROR
        assert got == ["Hello", " there"]
        assert "temperature" not in up.requests[0].body


async def test_no_first_byte_within_timeout_is_backend_timeout() -> None:
    async with running_upstream() as up:
        up.default = Behaviour(first_byte_delay=30)
        error = await _code(_backend(up.base_url, timeout_s=0.2))
        assert error.code is ErrorCode.BACKEND_TIMEOUT


async def test_refused_connection_and_unknown_host_are_model_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = await _code(_backend(f"http://127.0.0.1:{port}/v1"))
    assert error.code is ErrorCode.MODEL_UNAVAILABLE
    error = await _code(_backend("http://no-such-host.invalid/v1", timeout_s=5))
    assert error.code is ErrorCode.MODEL_UNAVAILABLE


async def _hanging(up: Upstream) -> tuple[OpenAIBackend, ModelEntry]:
    up.default = Behaviour(hang_after=1)
    return _backend(up.base_url), ModelEntry("m", "m", "m")


async def test_closing_the_generator_closes_the_upstream_connection() -> None:
    async with running_upstream() as up:
        backend, entry = await _hanging(up)
        stream = backend.stream_chat(PROMPT, entry, 64, None)
        assert await stream.__anext__() == Delta("Hello")
        closed_at = trio.current_time()
        await stream.aclose()
        seen = up.requests[0]
        with trio.fail_after(5):
            await seen.gone.wait()
        assert seen.gone_at is not None
        assert seen.gone_at - closed_at < 0.1


async def test_cancelling_the_reader_closes_the_upstream_connection() -> None:
    async with running_upstream() as up:
        backend, entry = await _hanging(up)
        with trio.move_on_after(0.2) as scope:
            async with contextlib.aclosing(backend.stream_chat(PROMPT, entry, 64, None)) as s:
                async for _ in s:
                    pass
        assert scope.cancelled_caught
        cancelled_at = trio.current_time()
        seen = up.requests[0]
        with trio.fail_after(5):
            await seen.gone.wait()
        assert seen.gone_at is not None
        assert seen.gone_at - cancelled_at < 0.1
