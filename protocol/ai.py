"""AI participants in rooms (CONTRACT 12): who answers, the prompt, the frames, the drafts.

Rules
-----
1. AIs never answer AIs: a message whose sender is an ``ai-`` participant
   triggers nobody and cancels nothing.
2. A message from anyone else triggers each AI member whose engagement in the
   room is ``always``, and each AI member it mentions (``content.mentions``;
   the ScaiGrid ``mention`` list is merged into it on the way in).
   ``keyword`` and ``autonomous`` answer mentions only.
3. Engagement precedence: the per-AI override of the room, then the room-wide
   setting, then the AI's own default, then the contract default: ``always``
   in a DM with an AI, ``mention`` everywhere else.
4. At most one draft per (room, AI) is alive. A new message from a non-AI
   member stops every running draft of the room; a redaction stops the drafts
   it triggered; ``stop`` stops what it names. A trigger for an AI whose draft
   is still winding down waits (only the newest such trigger is kept) and
   starts when that draft ends.
5. Every started draft ends exactly once (``done``, ``cancelled`` or
   ``error``) and may be persisted at most once.

:class:`DraftBook` holds rules 4 and 5 as a synchronous state machine; the
runner in ``homeserver/ai/`` drives it and does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from protocol.ids import AI
from protocol.llm import ChatMessage, estimate_message_tokens

AI_KINDS = ("bot", "agent", "persona")
MODES = ("always", "mention", "keyword", "autonomous")
OWN_DEFAULTS = ("mention", "always")
STATUSES = ("thinking", "streaming", "done", "cancelled", "error")
Outcome = Literal["done", "cancelled", "error"]
OUTCOMES: tuple[Outcome, ...] = ("done", "cancelled", "error")


def is_ai(participant_id: str) -> bool:
    """AI participants have ``ai-`` ids (``protocol.ids.participant_id``)."""
    return participant_id.startswith(AI)


def default_mode(room_type: str, member_ids: Iterable[str]) -> str:
    """The contract default: ``always`` in a DM with an AI, ``mention`` elsewhere."""
    if room_type == "dm" and any(is_ai(pid) for pid in member_ids):
        return "always"
    return "mention"


def effective_mode(
    ai_id: str, room_modes: Mapping[str, str | None], own_default: str | None, fallback: str
) -> str:
    """Rule 3. ``room_modes`` maps ``''`` (room-wide) and AI ids to stored modes."""
    for value in (room_modes.get(ai_id), room_modes.get(""), own_default):
        if value:
            return value
    return fallback


def mentions_of(content: Mapping[str, Any]) -> frozenset[str]:
    raw = content.get("mentions")
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(m for m in raw if isinstance(m, str))


def responders(
    sender_id: str,
    content: Mapping[str, Any],
    ai_members: Iterable[str],
    mode_of: Callable[[str], str],
) -> list[str]:
    """Rules 1 and 2: the AI members that answer this message, in id order."""
    if is_ai(sender_id):
        return []
    mentioned = mentions_of(content)
    return sorted(
        ai for ai in ai_members if ai != sender_id and (ai in mentioned or mode_of(ai) == "always")
    )


# --------------------------------------------------------------------------- prompt


@dataclass(frozen=True, slots=True)
class ContextLine:
    sender_id: str
    display_name: str
    body: str


def build_prompt(
    system_prompt: str,
    ai_id: str,
    lines: Sequence[ContextLine],
    *,
    budget_tokens: int,
) -> list[ChatMessage]:
    """System prompt first; others' lines as ``user`` turns prefixed with their display
    name, the AI's own as ``assistant`` turns; cut oldest-first to ``budget_tokens``
    (estimated), always keeping the system prompt and the newest line."""
    turns = [
        ChatMessage("assistant", line.body)
        if line.sender_id == ai_id
        else ChatMessage("user", f"{line.display_name}: {line.body}")
        for line in lines
    ]
    head = [ChatMessage("system", system_prompt)] if system_prompt else []
    used = sum(estimate_message_tokens(m) for m in head)
    kept: list[ChatMessage] = []
    for turn in reversed(turns):
        cost = estimate_message_tokens(turn)
        if kept and used + cost > budget_tokens:
            break
        kept.append(turn)
        used += cost
    return head + kept[::-1]


# --------------------------------------------------------------------------- frames


def status_frame(
    room_id: str,
    participant_id: str,
    draft_id: str,
    status: str,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "swp.ai.status",
        "room_id": room_id,
        "participant_id": participant_id,
        "status": status,
        "draft_id": draft_id,
    }
    if error is not None:
        frame["error"] = dict(error)
    return frame


def chunk_frame(
    room_id: str, participant_id: str, draft_id: str, seq: int, delta: str
) -> dict[str, Any]:
    return {
        "type": "swp.room.message.chunk",
        "room_id": room_id,
        "participant_id": participant_id,
        "draft_id": draft_id,
        "seq": seq,
        "delta": delta,
    }


def final_content(
    body: str,
    *,
    reply_to_event_id: str,
    model: str,
    draft_id: str,
    finish_reason: str,
    usage: Mapping[str, int],
) -> dict[str, Any]:
    return {
        "msgtype": "swp.text",
        "body": body,
        "reply_to_event_id": reply_to_event_id,
        "ai": {
            "model": model,
            "draft_id": draft_id,
            "finish_reason": finish_reason,
            "usage": dict(usage),
        },
    }


# --------------------------------------------------------------------------- drafts


@dataclass(slots=True)
class Draft:
    draft_id: str
    room_id: str
    ai_id: str
    trigger_event_id: str
    stopping: bool = False
    outcome: Outcome | None = None
    persisted: bool = False


@dataclass(frozen=True, slots=True)
class _Trigger:
    trigger_event_id: str


@dataclass(frozen=True, slots=True)
class Changes:
    """What the driver must do: stop these drafts' generations, start these drafts."""

    stop: tuple[Draft, ...] = ()
    start: tuple[Draft, ...] = ()


@dataclass
class DraftBook:
    """Rules 4 and 5. ``new_id`` names each new draft; ``keep_ended`` keeps ended drafts
    for inspection (tests), otherwise they are forgotten when they end."""

    new_id: Callable[[], str]
    keep_ended: bool = False
    _alive: dict[tuple[str, str], Draft] = field(default_factory=dict)
    _waiting: dict[tuple[str, str], _Trigger] = field(default_factory=dict)
    _drafts: dict[str, Draft] = field(default_factory=dict)

    # -- reads --------------------------------------------------------------

    def alive(self, room_id: str, ai_id: str) -> Draft | None:
        return self._alive.get((room_id, ai_id))

    def busy(self, room_id: str, ai_id: str) -> bool:
        return (room_id, ai_id) in self._alive or (room_id, ai_id) in self._waiting

    def drafts(self) -> list[Draft]:
        return list(self._drafts.values())

    def alive_drafts(self) -> list[Draft]:
        return list(self._alive.values())

    # -- inputs -------------------------------------------------------------

    def human_message(self, room_id: str, event_id: str, targets: Iterable[str]) -> Changes:
        """A message from a non-AI member: stop the room's drafts, then trigger ``targets``."""
        stop = self._stop_where(lambda d: d.room_id == room_id)
        for key in [k for k in self._waiting if k[0] == room_id]:
            del self._waiting[key]  # superseded by this newer message
        start = []
        for ai_id in targets:
            draft = self._trigger(room_id, ai_id, event_id)
            if draft is not None:
                start.append(draft)
        return Changes(tuple(stop), tuple(start))

    def engage(self, room_id: str, ai_id: str, event_id: str) -> Draft | None:
        """An explicit request; ``None`` when that AI is busy in that room."""
        if self.busy(room_id, ai_id):
            return None
        return self._trigger(room_id, ai_id, event_id)

    def redaction(self, room_id: str, redacted_event_id: str) -> Changes:
        for key, trigger in list(self._waiting.items()):
            if key[0] == room_id and trigger.trigger_event_id == redacted_event_id:
                del self._waiting[key]
        stop = self._stop_where(
            lambda d: d.room_id == room_id and d.trigger_event_id == redacted_event_id
        )
        return Changes(tuple(stop))

    def stop(self, room_id: str, ai_id: str | None = None) -> Changes:
        def named(room: str, ai: str) -> bool:
            return room == room_id and (ai_id is None or ai == ai_id)

        for key in [k for k in self._waiting if named(*k)]:
            del self._waiting[key]
        return Changes(tuple(self._stop_where(lambda d: named(d.room_id, d.ai_id))))

    def claim_persist(self, draft_id: str) -> bool:
        """True the first time only: the draft's one final event may be stored."""
        draft = self._drafts.get(draft_id)
        if draft is None or draft.persisted or draft.outcome is not None:
            return False
        draft.persisted = True
        return True

    def finished(self, draft_id: str, outcome: Outcome) -> Changes:
        """The draft's generation ended; start the trigger that waited for it, if any."""
        draft = self._drafts.get(draft_id)
        if draft is None or draft.outcome is not None:
            raise ValueError(f"draft {draft_id} already ended")
        draft.outcome = outcome
        if not self.keep_ended:
            del self._drafts[draft_id]
        key = (draft.room_id, draft.ai_id)
        if self._alive.get(key) is draft:
            del self._alive[key]
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return Changes()
        nxt = self._trigger(draft.room_id, draft.ai_id, waiting.trigger_event_id)
        return Changes(start=(nxt,) if nxt is not None else ())

    # -- internals ----------------------------------------------------------

    def _trigger(self, room_id: str, ai_id: str, event_id: str) -> Draft | None:
        key = (room_id, ai_id)
        current = self._alive.get(key)
        if current is not None:
            if not current.stopping:
                return None  # already answering; one draft at a time
            self._waiting[key] = _Trigger(event_id)
            return None
        draft = Draft(self.new_id(), room_id, ai_id, event_id)
        self._alive[key] = draft
        self._drafts[draft.draft_id] = draft
        return draft

    def _stop_where(self, pick: Callable[[Draft], bool]) -> list[Draft]:
        out = []
        for draft in self._alive.values():
            if not draft.stopping and pick(draft):
                draft.stopping = True
                out.append(draft)
        return out
