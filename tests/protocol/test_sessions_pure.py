"""Pure parts of sessions: context cutting, the chunk SSE encoder, usage estimates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.context import Counted, budget_for, fit_context, prompt_cost
from protocol.errors import ApiError, ErrorCode
from protocol.llm import (
    MESSAGE_OVERHEAD_TOKENS,
    ChatMessage,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
    estimate_usage,
)
from protocol.sse import (
    DONE,
    KEEPALIVE,
    ContentChunks,
    chunk,
    encode_comment,
    encode_data,
    encode_error,
)

text = st.text(min_size=1, max_size=200)
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=100))


@st.composite
def histories(draw: st.DrawFn) -> list[Counted]:
    turns = draw(
        st.lists(st.tuples(st.sampled_from(["user", "assistant"]), text, counts), max_size=30)
    )
    history = [Counted(ChatMessage(role, body), n) for role, body, n in turns]  # type: ignore[arg-type]
    history.append(Counted(ChatMessage("user", draw(text)), draw(counts)))
    return history


@given(
    system=st.one_of(st.none(), text),
    history=histories(),
    budget=st.integers(min_value=0, max_value=3000),
)
def test_cut_keeps_system_and_newest_and_never_exceeds_the_budget(
    system: str | None, history: list[Counted], budget: int
) -> None:
    if prompt_cost(system, history[-1:]) > budget:  # refused only when it cannot fit
        with pytest.raises(ApiError, match=r"^VALIDATION_ERROR: content") as info:
            fit_context(system, history, budget)
        assert info.value.code is ErrorCode.VALIDATION_ERROR
        return
    prompt = fit_context(system, history, budget)
    if system:
        assert prompt[0] == ChatMessage("system", system)
    kept = prompt[1:] if system else prompt
    assert kept[-1] == history[-1].message  # the newest user message
    assert kept[0].role == "user"
    # A suffix of the history (oldest dropped first), costing at most the budget.
    suffix = history[len(history) - len(kept) :]
    assert [c.message for c in suffix] == kept
    assert prompt_cost(system, suffix) <= budget
    # Nothing more would have fitted: the next-older message (if any) would overflow,
    # unless it was dropped only to start on a user turn.
    dropped = history[: len(history) - len(kept)]
    if dropped and dropped[-1].message.role == "user":
        assert prompt_cost(system, [dropped[-1], *suffix]) > budget


def test_cut_everything_fits() -> None:
    history = [
        Counted(ChatMessage("user", "a")),
        Counted(ChatMessage("assistant", "b"), 1),
        Counted(ChatMessage("user", "c")),
    ]
    prompt = fit_context("sys", history, budget_for(8192, 1024))
    assert [m.content for m in prompt] == ["sys", "a", "b", "c"]


def test_cut_uses_stored_counts_over_estimates() -> None:
    long_but_cheap = Counted(ChatMessage("assistant", "x" * 4000), 1)
    history = [Counted(ChatMessage("user", "q")), long_but_cheap, Counted(ChatMessage("user", "n"))]
    budget = 3 * (1 + MESSAGE_OVERHEAD_TOKENS)
    assert len(fit_context(None, history, budget)) == 3


def test_cut_drops_a_leading_assistant_turn() -> None:
    history = [
        Counted(ChatMessage("user", "old " * 50)),
        Counted(ChatMessage("assistant", "a")),
        Counted(ChatMessage("user", "new")),
    ]
    prompt = fit_context(None, history, 2 * (1 + MESSAGE_OVERHEAD_TOKENS))
    assert prompt == [ChatMessage("user", "new")]


def test_cut_refuses_when_the_newest_message_cannot_fit() -> None:
    with pytest.raises(ApiError) as info:
        fit_context("s" * 400, [Counted(ChatMessage("user", "hi"))], 50)
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    with pytest.raises(ApiError):
        fit_context(None, [Counted(ChatMessage("assistant", "hi"))], 50)


@given(
    content=st.one_of(st.none(), st.text(max_size=300)),
    finish=st.sampled_from([None, "stop", "length", "cancelled", "error"]),
    usage=st.one_of(st.none(), st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6))),
    created=st.integers(0, 2**40),
)
def test_chunk_encoder_round_trips_as_one_sse_data_event(
    content: str | None, finish: str | None, usage: Usage | None, created: int
) -> None:
    body = chunk("msg_1", created, "dev/echo", content=content, finish_reason=finish, usage=usage)
    raw = encode_data(body)
    assert raw.startswith(b"data: ")
    assert raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 2  # one line: JSON never carries a raw newline
    parsed = json.loads(raw[6:-2])
    assert parsed == body
    assert parsed["object"] == "chat.completion.chunk"
    assert parsed["choices"][0]["finish_reason"] == finish
    assert parsed["choices"][0]["delta"] == ({} if content is None else {"content": content})
    assert ("usage" in parsed) is (usage is not None)
    if usage is not None:
        assert parsed["usage"]["total_tokens"] == usage.prompt_tokens + usage.completion_tokens


@given(
    completion_id=st.text(max_size=40),
    model=st.text(max_size=40),
    created=st.integers(0, 2**40),
    contents=st.lists(st.text(max_size=50), max_size=5),
)
def test_content_chunk_template_gives_the_bytes_of_the_encoder(
    completion_id: str, model: str, created: int, contents: list[str]
) -> None:
    chunks = ContentChunks(completion_id, created, model)
    expected = [encode_data(chunk(completion_id, created, model, content=c)) for c in contents]
    assert [chunks.encode(c) for c in contents] == expected
    assert chunks.encode_many(contents) == b"".join(expected)


def test_done_keepalive_comment_and_error_event() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert KEEPALIVE == b": keepalive\n\n"
    assert encode_comment("a\nb") == b": a b\n\n"
    raw = encode_error({"code": "BACKEND_ERROR", "message": "x"})
    assert raw == b'event: error\ndata: {"error":{"code":"BACKEND_ERROR","message":"x"}}\n\n'


@given(messages=st.lists(st.builds(ChatMessage, st.sampled_from(["user", "system"]), text)))
def test_usage_estimates(messages: list[ChatMessage]) -> None:
    reply = " ".join(m.content for m in messages)
    usage = estimate_usage(messages, reply)
    assert usage.prompt_tokens == estimate_prompt_tokens(messages)
    assert usage.prompt_tokens >= len(messages) * MESSAGE_OVERHEAD_TOKENS
    assert usage.completion_tokens == estimate_tokens(reply)
    assert usage.completion_tokens <= len(reply)
    assert (usage.completion_tokens == 0) is (reply == "")
