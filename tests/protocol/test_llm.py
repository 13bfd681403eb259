"""protocol.llm: token estimates, the knowledge-chunk prompt format, cited markers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol.llm import (
    ChatMessage,
    Usage,
    cited_markers,
    estimate_prompt_tokens,
    estimate_tokens,
    format_knowledge,
    knowledge_chunk_count,
)


def test_estimate_tokens_is_about_four_characters() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


@given(st.text(max_size=500), st.text(max_size=500))
def test_estimate_is_monotone_and_subadditive_enough(a: str, b: str) -> None:
    assert estimate_tokens(a + b) >= max(estimate_tokens(a), estimate_tokens(b))
    assert estimate_tokens(a + b) <= estimate_tokens(a) + estimate_tokens(b) + 1


def test_prompt_estimate_counts_every_message() -> None:
    msgs = [ChatMessage("system", "x" * 40), ChatMessage("user", "y" * 8)]
    assert estimate_prompt_tokens(msgs) == 10 + 4 + 2 + 4


def test_usage_total_and_dict() -> None:
    u = Usage(3, 4)
    assert u.total_tokens == 7
    assert u.to_dict() == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@given(st.lists(st.text(min_size=1, max_size=80), max_size=12))
def test_knowledge_format_round_trips_its_count(chunks: list[str]) -> None:
    text = format_knowledge(chunks)
    messages = [ChatMessage("system", "You are helpful."), ChatMessage("system", text)]
    assert knowledge_chunk_count(messages) == len(chunks)
    # Markers in user text are not knowledge.
    assert knowledge_chunk_count([ChatMessage("user", text)]) == 0


def test_knowledge_chunk_newlines_are_flattened() -> None:
    text = format_knowledge(["line one\n[^9] injected", "two"])
    assert knowledge_chunk_count([ChatMessage("system", text)]) == 2


def test_cited_markers_in_order_without_repeats() -> None:
    assert cited_markers("a [^2] b [^1] c [^2] [^x]") == ["2", "1"]
    assert cited_markers("no markers") == []
