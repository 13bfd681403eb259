"""``dev/echo``: the built-in deterministic model (CONTRACT 10). No network, no weights.

Its reply is ``echo: `` + the last user message's text, plus `` [^1]``,
`` [^2]``... one marker per knowledge chunk in the prompt. It streams one word
per chunk, ``delay_ms`` apart, stops after ``max_tokens`` words
(``finish_reason: "length"``), and reports usage as whitespace-separated word
counts (prompt = every prompt message, completion = the reply).

Pacing is shared: every stream of one backend whose next word is due in the same
millisecond waits for one timer (:class:`bridges.ticks.Ticks`). A trio timer is a cancel scope
whose deadline expires, about 30-40 us of the server's CPU each; with hundreds of
paced streams in the server process that was a fifth of its CPU (bench/RESULTS.md),
cost that belongs to the stand-in model, not to the server being measured.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import trio

from bridges.models.base import Delta, Finish, StreamItem
from bridges.ticks import Ticks
from conf.sections import ModelEntry
from protocol.llm import ChatMessage, Usage, knowledge_chunk_count

ECHO_SLUG = "dev/echo"
ECHO_MODEL = ModelEntry(
    slug=ECHO_SLUG,
    upstream_id=ECHO_SLUG,
    display_name="Echo (built-in dev model)",
    context_window=32768,
    max_output_tokens=4096,
)


def echo_reply(messages: Sequence[ChatMessage]) -> str:
    """The whole reply ``dev/echo`` gives to ``messages``."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    markers = "".join(f" [^{n}]" for n in range(1, knowledge_chunk_count(messages) + 1))
    return f"echo: {last}{markers}"


def word_count(text: str) -> int:
    return len(text.split())


class WordCounts:
    """``word_count`` remembered per text: the AIs answering one message all send the
    same room context, so its (long) lines are split once, not once per AI.

    Bounded: texts longer than ``longest`` are counted each time, and the memo is
    emptied when it holds ``entries`` texts.
    """

    def __init__(self, *, entries: int = 512, longest: int = 8192) -> None:
        self._counts: dict[str, int] = {}
        self._entries = entries
        self._longest = longest

    def __call__(self, text: str) -> int:
        count = self._counts.get(text)
        if count is None:
            count = word_count(text)
            if len(text) <= self._longest:
                if len(self._counts) >= self._entries:
                    self._counts.clear()
                self._counts[text] = count
        return count


class EchoBackend:
    name = "dev"

    def __init__(self, delay_ms: int = 5) -> None:
        self._delay = delay_ms / 1000
        self._ticks = Ticks()
        self._word_count = WordCounts()

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        model: ModelEntry,
        max_tokens: int,
        temperature: float | None,
    ) -> AsyncGenerator[StreamItem, None]:
        words = echo_reply(messages).split()
        reason = "stop"
        if len(words) > max_tokens:
            words, reason = words[:max_tokens], "length"
        prompt = sum(self._word_count(m.content) for m in messages)
        del messages  # not needed while the words stream (fewer live objects per stream)
        for i, word in enumerate(words):
            if self._delay:
                await self._ticks.sleep_until(trio.current_time() + self._delay)
            else:
                await trio.lowlevel.checkpoint()
            yield Delta(word if i == 0 else " " + word)
        yield Finish(reason, Usage(prompt, len(words)))
