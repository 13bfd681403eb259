"""Pure pieces of the model layer shared by every AI feature (CONTRACT 10).

Chat messages, usage, the token estimate (about 4 characters a token; no
tokenizer is ever downloaded), and the one format in which retrieved knowledge
chunks are put into a prompt: a system message whose lines start ``[^n]``.
Backends (``bridges/models``) and callers (sessions, AI participants, ScaiBot)
agree on it through this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})
FinishReason = Literal["stop", "length", "cancelled", "error"]
FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "cancelled", "error"})

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, as OpenAI-style chat formats cost


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def estimate_tokens(text: str) -> int:
    """About 4 characters a token, at least 1 for non-empty text."""
    if not text:
        return 0
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def estimate_message_tokens(message: ChatMessage) -> int:
    return estimate_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(estimate_message_tokens(m) for m in messages)


# --------------------------------------------------------------------------- knowledge

_MARKER_LINE = re.compile(r"^\[\^(\d{1,4})\]", re.MULTILINE)
KNOWLEDGE_HEADER = "Knowledge (cite with the marker, e.g. [^1]):"


def format_knowledge(chunks: Sequence[str]) -> str:
    """The system-message text that gives a model numbered knowledge chunks."""
    lines = [KNOWLEDGE_HEADER]
    for n, text in enumerate(chunks, start=1):
        lines.append(f"[^{n}] " + " ".join(text.split()))
    return "\n".join(lines)


def knowledge_chunk_count(messages: Sequence[ChatMessage]) -> int:
    """How many distinct ``[^n]`` knowledge chunks the system messages carry."""
    seen: set[str] = set()
    for m in messages:
        if m.role == "system":
            seen.update(_MARKER_LINE.findall(m.content))
    return len(seen)


_CITED = re.compile(r"\[\^(\d{1,4})\]")


def cited_markers(text: str) -> list[str]:
    """The ``[^n]`` markers an answer contains, in first-appearance order."""
    return list(dict.fromkeys(_CITED.findall(text)))


def estimate_usage(messages: Sequence[ChatMessage], reply: str) -> Usage:
    """Usage when the backend reports none: the prompt and the reply, estimated."""
    return Usage(estimate_prompt_tokens(messages), estimate_tokens(reply))
