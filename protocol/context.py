"""Context-window cutting (CONTRACT 10): what history fits the model.

The history sent upstream is cut oldest-first to fit ``context_window -
max_tokens``. The system prompt and the newest user message are always kept;
if those two alone do not fit, the request is refused (422 ``VALIDATION_ERROR``
naming ``content``) rather than sent over budget. Token counts are the ones
stored with each message (the backend's own count where it reported one) or
the ~4-characters-a-token estimate; each message also costs
:data:`protocol.llm.MESSAGE_OVERHEAD_TOKENS` for its role and separators.

After cutting, leading assistant messages are dropped too, so the history
always starts with a user turn (some chat templates insist on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import Family, invalid
from protocol.llm import MESSAGE_OVERHEAD_TOKENS, ChatMessage, estimate_tokens


@dataclass(frozen=True, slots=True)
class Counted:
    """A history message and its token count (``None``: estimate it)."""

    message: ChatMessage
    tokens: int | None = None

    @property
    def cost(self) -> int:
        body = estimate_tokens(self.message.content) if self.tokens is None else self.tokens
        return max(0, body) + MESSAGE_OVERHEAD_TOKENS


def budget_for(context_window: int, max_tokens: int) -> int:
    """Prompt tokens available when ``max_tokens`` are reserved for the reply."""
    return context_window - max_tokens


def fit_context(
    system_prompt: str | None,
    history: Sequence[Counted],
    budget: int,
    *,
    family: Family = "sg",
) -> list[ChatMessage]:
    """The prompt to send: system prompt, then the newest history that fits ``budget``.

    ``history`` is oldest first and ends with the newest user message.
    """
    if not history or history[-1].message.role != "user":
        raise invalid("content", "the newest message must be a user message", family=family)
    system = Counted(ChatMessage("system", system_prompt)) if system_prompt else None
    used = history[-1].cost + (system.cost if system is not None else 0)
    if used > budget:
        raise invalid(
            "content",
            f"the message and system prompt need about {used} tokens; "
            f"the model's context window leaves {max(budget, 0)} after max_tokens",
            family=family,
        )
    start = len(history) - 1
    while start > 0 and used + history[start - 1].cost <= budget:
        start -= 1
        used += history[start].cost
    while history[start].message.role != "user":
        start += 1  # the newest message is a user message, so this stops
    kept = [c.message for c in history[start:]]
    return ([system.message] if system is not None else []) + kept


def prompt_cost(system_prompt: str | None, history: Sequence[Counted]) -> int:
    """The tokens :func:`fit_context` counts for a prompt (for tests and estimates)."""
    system = Counted(ChatMessage("system", system_prompt)).cost if system_prompt else 0
    return system + sum(c.cost for c in history)
