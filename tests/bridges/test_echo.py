"""dev/echo: the deterministic built-in model behind the ordinary backend interface."""

from __future__ import annotations

from contextlib import aclosing

import pytest
import trio
import trio.testing

from bridges.models import ECHO_SLUG, Delta, Finish, ModelRegistry, build_registry
from bridges.models.echo import echo_reply
from conf.sections import ModelsSettings
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, format_knowledge


def registry(delay_ms: int = 0) -> ModelRegistry:
    return build_registry(ModelsSettings(dev_echo_delay_ms=delay_ms), dev_echo=True)


async def collect(
    reg: ModelRegistry, messages: list[ChatMessage], max_tokens: int = 100
) -> tuple[str, Finish]:
    text = ""
    finish: Finish | None = None
    async with aclosing(reg.stream_chat(ECHO_SLUG, messages, max_tokens)) as stream:
        async for item in stream:
            if isinstance(item, Delta):
                assert finish is None, "no delta after the finish"
                text += item.text
            else:
                finish = item
    assert finish is not None
    return text, finish


async def test_echo_streams_one_word_per_chunk_and_counts_words() -> None:
    msgs = [ChatMessage("system", "be brief"), ChatMessage("user", "hello there world")]
    deltas = []
    async for item in registry().stream_chat(ECHO_SLUG, msgs, 100):
        deltas.append(item)
    assert [d.text for d in deltas if isinstance(d, Delta)] == [
        "echo:",
        " hello",
        " there",
        " world",
    ]
    finish = deltas[-1]
    assert isinstance(finish, Finish)
    assert finish.finish_reason == "stop"
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (5, 4)


async def test_echo_uses_the_last_user_message() -> None:
    msgs = [
        ChatMessage("user", "first"),
        ChatMessage("assistant", "echo: first"),
        ChatMessage("user", "second one"),
    ]
    text, _ = await collect(registry(), msgs)
    assert text == "echo: second one"


async def test_echo_appends_one_marker_per_knowledge_chunk() -> None:
    msgs = [
        ChatMessage("system", format_knowledge(["alpha", "beta", "gamma"])),
        ChatMessage("user", "q"),
    ]
    text, _ = await collect(registry(), msgs)
    assert text == "echo: q [^1] [^2] [^3]"
    assert echo_reply(msgs) == text


async def test_echo_stops_at_max_tokens() -> None:
    text, finish = await collect(registry(), [ChatMessage("user", "a b c d e")], max_tokens=3)
    assert text == "echo: a b"
    assert finish.finish_reason == "length"
    assert finish.usage.completion_tokens == 3


async def test_echo_paces_its_chunks(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    await collect(registry(delay_ms=5), [ChatMessage("user", "one two three")])
    assert trio.current_time() - start == pytest.approx(0.020)


async def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ApiError) as exc:
        registry().stream_chat("nope/none", [ChatMessage("user", "x")], 10)
    assert exc.value.code is ErrorCode.MODEL_NOT_FOUND
    assert exc.value.http_status == 404


def test_echo_is_offered_only_when_enabled() -> None:
    assert [m.slug for m in registry().models()] == [ECHO_SLUG]
    assert build_registry(ModelsSettings(), dev_echo=False).models() == []
