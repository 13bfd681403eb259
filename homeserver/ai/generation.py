"""One draft, start to end: context, model stream, frames, the one final event.

Status order: ``thinking`` (at once) → ``streaming`` (first text) → ``done``,
``cancelled`` or ``error`` (exactly one, after the final event is stored).
Cancelled and failed drafts store what they had (``finish_reason``
``cancelled`` / ``error``), nothing when that is empty. A shutdown stores
nothing: the draft's members are told ``cancelled`` and the task ends.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from bridges.models.base import ChatModels, Delta, Finish
from bridges.ticks import Ticks
from conf.sections import AiSettings
from homeserver.ai.chunks import ChunkStream
from homeserver.ai.pump import FramePump
from homeserver.errors import wire_error
from homeserver.rooms.messages import MessageService, SendRequest
from homeserver.store.database import Readers
from protocol.ai import (
    ContextLine,
    Draft,
    Outcome,
    build_prompt,
    chunk_frame,
    final_content,
    status_frame,
)
from protocol.errors import ApiError, ErrorCode
from protocol.events import EventType
from protocol.llm import ChatMessage, Usage, estimate_tokens
from protocol.ratelimit import SlidingWindowLimiter, retry_after_seconds
from storage import events as event_store
from storage import participants as pstore
from storage.ai import AiParticipant

__all__ = ["Deps", "Outcome", "latest_message", "run_draft"]

log = logging.getLogger("homeserver.ai")

RATE_WINDOW = 60.0  # ai.rate_limit counts answers per room per minute


class SharedContext:
    """One context read per trigger, shared by every AI answering it at the same time
    (50 AIs mentioned in one message read the room once, not 50 times)."""

    def __init__(self, readers: Readers, count: int) -> None:
        self._readers = readers
        self._count = count
        self._flights: dict[str, tuple[trio.Event, list[list[ContextLine]]]] = {}

    async def lines(self, room_id: str, trigger_event_id: str) -> list[ContextLine]:
        flight = self._flights.get(trigger_event_id)
        if flight is not None:
            done, box = flight
            await done.wait()
            if box:
                return box[0]
            # the first reader was cancelled: read for ourselves
        done, box = trio.Event(), []
        self._flights[trigger_event_id] = (done, box)
        try:
            box.append(
                await self._readers.read(context_lines, room_id, trigger_event_id, self._count)
            )
            return box[0]
        finally:
            del self._flights[trigger_event_id]
            done.set()


@dataclass(frozen=True, slots=True)
class Deps:
    pump: FramePump
    context: SharedContext
    messages: MessageService
    models: ChatModels
    limiter: trio.CapacityLimiter
    rate: SlidingWindowLimiter
    settings: AiSettings
    ai_of: Callable[[str], AiParticipant | None]
    claim_persist: Callable[[str], bool]
    # Shared by every draft: the chunk flushers' timers, and the lane each finished
    # draft stores its final event through (see run_draft).
    ticks: Ticks
    finals: trio.CapacityLimiter


# --------------------------------------------------------------------------- reads


def context_lines(
    conn: sqlite3.Connection, room_id: str, trigger_event_id: str, count: int
) -> list[ContextLine]:
    """The room's last ``count`` visible text messages up to the trigger, oldest first."""
    trigger = event_store.get_event(conn, trigger_event_id)
    if trigger is None or trigger.room_id != room_id:
        return []
    events = event_store.room_history(
        conn, room_id, from_pos=trigger.stream_position + 1, direction="back", limit=count * 2 + 10
    )
    picked = [
        e
        for e in events
        if e.type is EventType.MESSAGE
        and not e.is_redacted
        and isinstance(e.content.get("body"), str)
    ][:count]
    people = pstore.get_participants(conn, sorted({e.sender_id for e in picked}))
    return [
        ContextLine(
            e.sender_id,
            people[e.sender_id].display_name if e.sender_id in people else e.sender_id,
            str(e.content["body"]),
        )
        for e in reversed(picked)
    ]


def latest_message(conn: sqlite3.Connection, room_id: str, ai_id: str) -> str | None:
    """The newest visible message in the room not sent by ``ai_id``."""
    for event in event_store.room_history(
        conn, room_id, from_pos=None, direction="back", limit=100
    ):
        if event.type is EventType.MESSAGE and not event.is_redacted and event.sender_id != ai_id:
            return event.event_id
    return None


# --------------------------------------------------------------------------- the draft


async def run_draft(deps: Deps, draft: Draft, scope: trio.CancelScope) -> Outcome:
    room_id, ai_id, draft_id = draft.room_id, draft.ai_id, draft.draft_id

    def send(frame: dict[str, Any]) -> None:
        deps.pump.send(room_id, frame)

    chunks = ChunkStream(
        send,
        partial(chunk_frame, room_id, ai_id, draft_id),
        interval=deps.settings.chunk_interval_ms / 1000,
        sleep_until=deps.ticks.sleep_until,
    )
    send(status_frame(room_id, ai_id, draft_id, "thinking"))
    error: BaseException | None = None
    outcome: Outcome = "done"
    finish_reason, usage, model = "stop", Usage(0, 0), ""
    try:
        with scope:
            try:
                model, finish_reason, usage = await _stream(deps, draft, chunks, send)
            except ApiError as exc:
                error, outcome, finish_reason = exc, "error", "error"
            except Exception as exc:  # a backend bug must not take the runner down
                log.exception("ai draft %s failed", draft_id)
                error, outcome, finish_reason = exc, "error", "error"
        if scope.cancelled_caught:
            outcome, finish_reason = "cancelled", "cancelled"
        chunks.flush()  # queued: the drafts ending in this tick share one hand-over
        body = chunks.text
        if outcome != "done":  # no usage from the backend: estimate what was generated
            usage = Usage(usage.prompt_tokens, estimate_tokens(body))
        # Drafts answering one message end together; their final events go through a
        # narrow lane, so the writer and the loop take them a few at a time and a
        # normal message sent meanwhile never queues behind all of them at once.
        async with deps.finals:
            deps.pump.flush(room_id)  # every chunk reaches the members before the event
            if body and deps.claim_persist(draft_id):
                ai = deps.ai_of(ai_id)
                content = final_content(
                    body,
                    reply_to_event_id=draft.trigger_event_id,
                    model=model or (ai.model if ai else ""),
                    draft_id=draft_id,
                    finish_reason=finish_reason,
                    usage=usage.to_dict(),
                )
                request = SendRequest(
                    ai_id, room_id, content, event_uuid=draft_id, rate_exempt=True
                )
                try:
                    await deps.messages.send(request)
                except ApiError as exc:
                    error, outcome = exc, "error"
    except BaseException:
        # Shutdown: store nothing, leave no member with a status that never ends.
        send(status_frame(room_id, ai_id, draft_id, "cancelled"))
        deps.pump.flush(room_id)
        raise
    payload = wire_error(error, "sw").to_dict() if error is not None else None
    send(status_frame(room_id, ai_id, draft_id, outcome, payload))
    return outcome


async def _stream(
    deps: Deps, draft: Draft, chunks: ChunkStream, send: Callable[[dict[str, Any]], None]
) -> tuple[str, str, Usage]:
    ai = deps.ai_of(draft.ai_id)
    if ai is None:
        raise ApiError(ErrorCode.SW_AI_NOT_FOUND, "the AI participant was deleted")
    wait = deps.rate.try_acquire(
        f"{draft.room_id}|{draft.ai_id}",
        trio.current_time(),
        limit=deps.settings.rate_limit,
        window=RATE_WINDOW,
    )
    if wait > 0:
        seconds = retry_after_seconds(wait)
        raise ApiError(
            ErrorCode.SW_RATE_LIMIT_EXCEEDED,
            f"this AI answers at most {deps.settings.rate_limit} times a minute in a room",
            retry_after=seconds,
        )
    entry = deps.models.get(ai.model)
    max_tokens = entry.max_output_tokens
    lines = await deps.context.lines(draft.room_id, draft.trigger_event_id)
    prompt = build_prompt(
        ai.system_prompt,
        ai.participant_id,
        lines,
        budget_tokens=entry.context_window - max_tokens,
    )
    failure: Exception | None = None
    finish: Finish | None = None
    async with deps.limiter, trio.open_nursery() as nursery:
        nursery.start_soon(chunks.run_flusher)
        try:
            finish = await _pull(deps, draft, ai.model, prompt, max_tokens, chunks, send)
        except Exception as exc:  # raised again outside the nursery: never in a group
            failure = exc
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if finish is None:
        raise ApiError(ErrorCode.BACKEND_ERROR, "the model stream ended without finishing")
    return ai.model, finish.finish_reason, finish.usage


async def _pull(
    deps: Deps,
    draft: Draft,
    slug: str,
    prompt: list[ChatMessage],
    max_tokens: int,
    chunks: ChunkStream,
    send: Callable[[dict[str, Any]], None],
) -> Finish | None:
    finish: Finish | None = None
    streaming = False
    async with contextlib.aclosing(deps.models.stream_chat(slug, prompt, max_tokens)) as stream:
        async for item in stream:
            if isinstance(item, Delta):
                if not streaming:
                    send(status_frame(draft.room_id, draft.ai_id, draft.draft_id, "streaming"))
                    streaming = True
                chunks.add(item.text)
            else:
                finish = item
    return finish
