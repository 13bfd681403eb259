"""A bot's tone (seed 002 "Tone", CONTRACT 13) and the prompt it assembles.

Prompt order (CONTRACT 13): voice skeleton from the tone, then terminology and
scope, then custom instructions (one system message, :func:`system_prompt`),
then the retrieved chunks numbered ``[^n]`` (:func:`protocol.llm.format_knowledge`),
then the history window, then the visitor's message (:func:`build_prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, estimate_prompt_tokens, format_knowledge

FORMALITY = ("formal", "neutral", "casual")
VERBOSITY = ("terse", "concise", "verbose")
EMPATHY = ("low", "medium", "high")
MAX_LIST = 50
MAX_ITEM = 300
MAX_TEXT = 4000
_FIELDS = {
    "persona_name",
    "persona_description",
    "formality",
    "verbosity",
    "empathy_level",
    "language",
    "strict_language",
    "terminology",
    "topics_in_scope",
    "topics_out_of_scope",
    "custom_instructions",
}


@dataclass(frozen=True, slots=True)
class Tone:
    persona_name: str | None = None
    persona_description: str | None = None
    formality: str = "neutral"
    verbosity: str = "concise"
    empathy_level: str = "medium"
    language: str | None = None
    strict_language: bool = False
    terminology: tuple[str, ...] = ()
    topics_in_scope: tuple[str, ...] = ()
    topics_out_of_scope: tuple[str, ...] = ()
    custom_instructions: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "persona_name": self.persona_name,
            "persona_description": self.persona_description,
            "formality": self.formality,
            "verbosity": self.verbosity,
            "empathy_level": self.empathy_level,
            "language": self.language,
            "strict_language": self.strict_language,
            "terminology": list(self.terminology),
            "topics_in_scope": list(self.topics_in_scope),
            "topics_out_of_scope": list(self.topics_out_of_scope),
            "custom_instructions": self.custom_instructions,
        }


def tone_invalid(field: str, message: str) -> ApiError:
    return ApiError(
        ErrorCode.TONE_INVALID,
        f"{field}: {message}",
        details=[{"field": field, "message": message}],
    )


def _text(body: Mapping[str, Any], field: str, max_len: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise tone_invalid(field, "must be a string or null")
    value = value.strip()
    if len(value) > max_len:
        raise tone_invalid(field, f"must be at most {max_len} characters")
    return value or None


def _choice(body: Mapping[str, Any], field: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(field)
    if value is None:
        return default
    if value not in choices:
        raise tone_invalid(field, f"must be one of {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def _strings(body: Mapping[str, Any], field: str) -> tuple[str, ...]:
    value = body.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise tone_invalid(field, f"must be a list of at most {MAX_LIST} strings")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_ITEM:
            raise tone_invalid(f"{field}[{i}]", f"must be a non-empty string of at most {MAX_ITEM}")
        items.append(" ".join(item.split()))
    return tuple(items)


def parse_tone(body: object, base: Tone | None = None) -> Tone:
    """Validate a tone object; absent keys take ``base``'s values (defaults when None)."""
    if not isinstance(body, Mapping):
        raise tone_invalid("tone", "must be an object")
    for key in body:
        if key not in _FIELDS:
            raise tone_invalid(str(key)[:64], "is not a tone field")
    start = (base or Tone()).to_dict()
    merged = {**start, **{k: v for k, v in body.items() if k in _FIELDS}}
    strict = merged.get("strict_language")
    if strict is None:
        strict = False
    if not isinstance(strict, bool):
        raise tone_invalid("strict_language", "must be true or false")
    tone = Tone(
        persona_name=_text(merged, "persona_name", 100),
        persona_description=_text(merged, "persona_description", 1000),
        formality=_choice(merged, "formality", FORMALITY, "neutral"),
        verbosity=_choice(merged, "verbosity", VERBOSITY, "concise"),
        empathy_level=_choice(merged, "empathy_level", EMPATHY, "medium"),
        language=_text(merged, "language", 64),
        strict_language=strict,
        terminology=_strings(merged, "terminology"),
        topics_in_scope=_strings(merged, "topics_in_scope"),
        topics_out_of_scope=_strings(merged, "topics_out_of_scope"),
        custom_instructions=_text(merged, "custom_instructions", MAX_TEXT),
    )
    if tone.strict_language and tone.language is None:
        raise tone_invalid("strict_language", "needs a language")
    return tone


# --------------------------------------------------------------------------- assembly

_FORMALITY = {
    "formal": "Use a formal, professional register; no slang.",
    "neutral": "Use a clear, neutral register.",
    "casual": "Use a relaxed, friendly, conversational register.",
}
_VERBOSITY = {
    "terse": "Answer in as few words as possible.",
    "concise": "Keep answers short and to the point.",
    "verbose": "Give thorough, detailed answers with explanations.",
}
_EMPATHY = {
    "low": "Stay factual; do not dwell on feelings.",
    "medium": "Acknowledge the visitor's situation where it matters.",
    "high": "Be warm and empathetic; acknowledge the visitor's feelings before answering.",
}


def _one_line(text: str) -> str:
    # Prompt lines never start with a knowledge marker: only format_knowledge's do.
    line = " ".join(text.split())
    return line.replace("[^", "[ ^")


def voice(display_name: str, tone: Tone) -> list[str]:
    """The voice skeleton: who the bot is and how it speaks."""
    name = _one_line(tone.persona_name or display_name)
    lines = [f"You are {name}."]
    if tone.persona_description:
        lines.append(_one_line(tone.persona_description))
    lines += [_FORMALITY[tone.formality], _VERBOSITY[tone.verbosity], _EMPATHY[tone.empathy_level]]
    if tone.language and tone.strict_language:
        lines.append(
            f"Always answer in {_one_line(tone.language)}, even when the visitor writes "
            "in another language."
        )
    elif tone.language:
        lines.append(f"Answer in {_one_line(tone.language)} unless the visitor writes otherwise.")
    return lines


def terminology_and_scope(tone: Tone) -> list[str]:
    lines = []
    if tone.terminology:
        lines.append("Terminology:")
        lines += [f"- {_one_line(t)}" for t in tone.terminology]
    if tone.topics_in_scope:
        topics = "; ".join(map(_one_line, tone.topics_in_scope))
        lines.append(f"Topics you help with: {topics}.")
    if tone.topics_out_of_scope:
        lines.append(
            "Politely decline these topics: "
            + "; ".join(map(_one_line, tone.topics_out_of_scope))
            + "."
        )
    return lines


def system_prompt(display_name: str, tone: Tone) -> str:
    """Voice skeleton, then terminology and scope, then custom instructions."""
    parts = ["\n".join(voice(display_name, tone))]
    scope = terminology_and_scope(tone)
    if scope:
        parts.append("\n".join(scope))
    if tone.custom_instructions:
        parts.append(tone.custom_instructions.strip().replace("[^", "[ ^"))
    return "\n\n".join(parts)


def build_prompt(
    system: str,
    chunks: Sequence[str],
    history: Sequence[ChatMessage],
    message: str,
) -> list[ChatMessage]:
    """The messages sent to the model, in CONTRACT 13's order."""
    messages = [ChatMessage("system", system)]
    if chunks:
        messages.append(ChatMessage("system", format_knowledge(chunks)))
    messages.extend(history)
    messages.append(ChatMessage("user", message))
    return messages


def fit_history(
    system: str,
    chunks: Sequence[str],
    history: Sequence[ChatMessage],
    message: str,
    budget: int,
) -> list[ChatMessage]:
    """The newest part of ``history`` that fits ``budget`` prompt tokens (estimated),
    cut oldest first; the system prompt and the visitor's message are always kept."""
    kept = list(history)
    while kept and estimate_prompt_tokens(build_prompt(system, chunks, kept, message)) > budget:
        kept.pop(0)
    return kept
