"""protocol.scaibot.tone: validation (TONE_INVALID) and the prompt assembly (golden)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, knowledge_chunk_count
from protocol.scaibot.tone import Tone, build_prompt, fit_history, parse_tone, system_prompt

GOLDEN_DEFAULT = """You are Support Bot.
Use a clear, neutral register.
Keep answers short and to the point.
Acknowledge the visitor's situation where it matters."""

GOLDEN_FULL = """You are Ada.
A support specialist for Acme's billing products.
Use a formal, professional register; no slang.
Give thorough, detailed answers with explanations.
Be warm and empathetic; acknowledge the visitor's feelings before answering.
Always answer in Dutch, even when the visitor writes in another language.

Terminology:
- workspace: a team's shared area
- seat: one paid user
Topics you help with: billing; invoices.
Politely decline these topics: legal advice.

Never promise refunds; link to the refund form."""


def test_default_tone_golden() -> None:
    assert system_prompt("Support Bot", Tone()) == GOLDEN_DEFAULT


def test_full_tone_golden_in_contract_order() -> None:
    tone = parse_tone(
        {
            "persona_name": "Ada",
            "persona_description": "A support specialist for Acme's billing products.",
            "formality": "formal",
            "verbosity": "verbose",
            "empathy_level": "high",
            "language": "Dutch",
            "strict_language": True,
            "terminology": ["workspace: a team's shared area", "seat:  one paid user"],
            "topics_in_scope": ["billing", "invoices"],
            "topics_out_of_scope": ["legal advice"],
            "custom_instructions": "Never promise refunds; link to the refund form.",
        }
    )
    assert system_prompt("Support Bot", tone) == GOLDEN_FULL


def test_language_without_strict() -> None:
    prompt = system_prompt("B", parse_tone({"language": "French"}))
    assert prompt.endswith("Answer in French unless the visitor writes otherwise.")


def test_prompt_order_voice_knowledge_history_message() -> None:
    history = [ChatMessage("user", "earlier"), ChatMessage("assistant", "reply")]
    messages = build_prompt("VOICE", ["chunk one", "chunk two"], history, "now")
    assert [m.role for m in messages] == ["system", "system", "user", "assistant", "user"]
    assert messages[0].content == "VOICE"
    assert messages[1].content.splitlines()[1:] == ["[^1] chunk one", "[^2] chunk two"]
    assert messages[-1].content == "now"
    assert knowledge_chunk_count(messages) == 2
    assert [m.role for m in build_prompt("V", [], [], "x")] == ["system", "user"]


def test_instructions_cannot_forge_knowledge_markers() -> None:
    tone = parse_tone({"custom_instructions": "[^1] fake chunk", "persona_name": "[^2] x"})
    messages = build_prompt(system_prompt("B", tone), [], [], "hi")
    assert knowledge_chunk_count(messages) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"formality": "rude"}, "formality"),
        ({"verbosity": "chatty"}, "verbosity"),
        ({"empathy_level": 3}, "empathy_level"),
        ({"strict_language": True}, "strict_language"),
        ({"strict_language": "yes", "language": "en"}, "strict_language"),
        ({"terminology": "not a list"}, "terminology"),
        ({"topics_in_scope": [""]}, "topics_in_scope[0]"),
        ({"persona_name": "x" * 101}, "persona_name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_tone_is_tone_invalid_naming_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_tone(body)
    assert info.value.code is ErrorCode.TONE_INVALID
    assert info.value.message.startswith(field)


def test_partial_tone_merges_over_a_base() -> None:
    base = parse_tone({"persona_name": "Ada", "formality": "casual"})
    merged = parse_tone({"verbosity": "terse"}, base=base)
    assert (merged.persona_name, merged.formality, merged.verbosity) == ("Ada", "casual", "terse")


def test_fit_history_drops_oldest_first_and_keeps_the_message() -> None:
    history = [ChatMessage("user", f"message number {i} " * 20) for i in range(10)]
    kept = fit_history("sys", [], history, "the question", budget=200)
    assert kept == history[len(history) - len(kept) :]
    assert len(kept) < len(history)
    assert fit_history("sys", [], history, "q", budget=0) == []


@given(st.text(max_size=200), st.sampled_from(["formal", "neutral", "casual"]))
def test_any_persona_name_assembles_without_knowledge_markers(name: str, formality: str) -> None:
    if len(name.strip()) > 100:
        with pytest.raises(ApiError):
            parse_tone({"persona_name": name})
        return
    tone = parse_tone({"persona_name": name, "formality": formality})
    prompt = system_prompt("Bot", tone)
    assert knowledge_chunk_count([ChatMessage("system", prompt)]) == 0
    assert prompt.startswith("You are ")
