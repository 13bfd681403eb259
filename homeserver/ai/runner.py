"""The engagement runner: AI participants answering in rooms (CONTRACT 12).

hub.publish_events ──observer──> AiRunner.observe (sync, never blocks)
        │ one dict test per event; only rooms with AI members pass
        v
  bounded channel ──> consumer task: decide (protocol.ai.DraftBook)
        v
  one task per draft: context → model stream (CapacityLimiter) →
  swp.ai.status + coalesced chunks (Hub.send_ephemeral) → one final
  swp.room.message through MessageService.send (at most FINALS_AT_ONCE
  drafts at a time) → status done|cancelled|error

Nothing here runs on the writer's or the hub's path: ``observe`` only copies
events into a bounded channel (an overflow drops the event and counts it).
A room without AI members costs one failed dict lookup per event.
Generation state lives only in memory: a restart forgets it, and nothing
is stored before the final event, so no half-stored answer survives one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from bridges.models.base import ChatModels
from bridges.ticks import Ticks
from conf.sections import AiSettings
from homeserver.ai import generation
from homeserver.ai.generation import Deps, SharedContext
from homeserver.ai.pump import FramePump
from homeserver.identity.auth import Principal
from homeserver.live.hub import Hub
from homeserver.rooms.messages import MessageService
from homeserver.rooms.service import (
    RoomService,
    joined_member,
    not_read_only,
    thresholds_of,
    writable_member,
)
from homeserver.store.database import Readers
from protocol import ids, power
from protocol.ai import (
    Changes,
    Draft,
    DraftBook,
    default_mode,
    effective_mode,
    is_ai,
    mentions_of,
    responders,
)
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, EventType
from protocol.ratelimit import SlidingWindowLimiter
from storage import ai as ai_store
from storage.ai import AiParticipant

log = logging.getLogger("homeserver.ai")

QUEUE = 4096
FINALS_AT_ONCE = 2  # drafts storing their final event at the same time (generation.run_draft)
_WATCHED = (EventType.MESSAGE, EventType.REDACTION)


@dataclass(slots=True)
class RunnerStats:
    observed: int = 0
    dropped: int = 0
    drafts: int = 0


class AiRunner:
    def __init__(
        self,
        *,
        hub: Hub,
        readers: Readers,
        messages: MessageService,
        rooms: RoomService,
        models: ChatModels,
        settings: AiSettings,
    ) -> None:
        self._hub = hub
        self._readers = readers
        self._rooms_service = rooms
        self._ai: dict[str, AiParticipant] = {}
        self._rooms: dict[str, set[str]] = {}  # room_id -> its live AI members
        self._book = DraftBook(new_id=lambda: ids.random_id("dft-"))
        self._scopes: dict[str, trio.CancelScope] = {}
        self._send, self._recv = trio.open_memory_channel[Event](QUEUE)
        self._nursery: trio.Nursery | None = None
        self._pump = FramePump(hub)
        self._deps = Deps(
            pump=self._pump,
            context=SharedContext(readers, settings.context_messages),
            messages=messages,
            models=models,
            limiter=trio.CapacityLimiter(settings.max_concurrent_generations),
            rate=SlidingWindowLimiter(),
            settings=settings,
            ai_of=self._ai.get,
            claim_persist=self._book.claim_persist,
            ticks=Ticks(),
            finals=trio.CapacityLimiter(FINALS_AT_ONCE),
        )
        self.stats = RunnerStats()

    # -- the AI index ---------------------------------------------------------

    def added(self, ai: AiParticipant) -> None:
        self._ai[ai.participant_id] = ai

    def joined(self, ai_id: str, room_ids: Iterable[str]) -> None:
        """Rooms an AI had already joined when this runner learnt of it (in a cluster,
        an AI created on another process)."""
        for room_id in room_ids:
            self._rooms.setdefault(room_id, set()).add(ai_id)

    def removed(self, ai_id: str) -> None:
        rooms = {r for r, ais in self._rooms.items() if ai_id in ais}
        rooms |= {d.room_id for d in self._book.alive_drafts() if d.ai_id == ai_id}
        for room_id in rooms:
            self._apply(self._book.stop(room_id, ai_id))
            self._leave(room_id, ai_id)
        self._ai.pop(ai_id, None)

    def _leave(self, room_id: str, ai_id: str) -> None:
        ais = self._rooms.get(room_id)
        if ais is not None:
            ais.discard(ai_id)
            if not ais:
                del self._rooms[room_id]

    def ai_rooms(self) -> dict[str, frozenset[str]]:
        return {room: frozenset(ais) for room, ais in self._rooms.items()}

    # -- the hub's observer (sync, never blocks) -------------------------------

    def observe(self, events: Sequence[Event]) -> None:
        rooms, ais = self._rooms, self._ai
        for event in events:
            if event.type is EventType.MEMBER:
                target = event.content.get("participant_id")
                if not (isinstance(target, str) and target in ais):
                    continue
                membership = event.content.get("membership")
                if membership == "join":
                    rooms.setdefault(event.room_id, set()).add(target)
                elif membership in ("leave", "ban"):
                    self._leave(event.room_id, target)
            elif event.room_id not in rooms or event.type not in _WATCHED:
                continue
            self.stats.observed += 1
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self.stats.dropped += 1

    # -- the service ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._hub.observer = self.observe
        for ai in await self._readers.read(ai_store.live_ai):
            self.added(ai)
        for room_id, ai_id in await self._readers.read(ai_store.ai_memberships):
            self._rooms.setdefault(room_id, set()).add(ai_id)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._pump.run)
                self._nursery = nursery
                task_status.started()
                async for event in self._recv:
                    try:
                        await self._handle(event)
                    except Exception:  # one bad event never stops the runner
                        log.exception("ai runner: event %s", event.event_id)
        finally:
            self._hub.observer = None
            self._nursery = None

    async def _handle(self, event: Event) -> None:
        room_id = event.room_id
        if event.type is EventType.MEMBER:
            target = str(event.content.get("participant_id"))
            membership = event.content.get("membership")
            if membership == "invite":
                self._spawn(self._accept_invite, target, room_id)
            elif membership in ("leave", "ban"):
                self._apply(self._book.stop(room_id, target))
            return
        if event.type is EventType.REDACTION:
            redacted = event.relates_to or event.content.get("event_id")
            if isinstance(redacted, str):
                self._apply(self._book.redaction(room_id, redacted))
            return
        if event.edited_at_ms is not None or is_ai(event.sender_id):
            return  # edits trigger nobody; AIs never answer (or interrupt) AIs
        ais = frozenset(self._rooms.get(room_id, ()))
        if ais and mentions_of(event.content) >= ais:
            targets = responders(event.sender_id, event.content, ais, lambda ai: "mention")
        elif ais:
            room_type, modes = await self._readers.read(ai_store.engagement_info, room_id)
            fallback = default_mode(room_type, self._hub.members_of(room_id))

            def mode_of(ai_id: str) -> str:
                own = self._ai.get(ai_id)
                return effective_mode(ai_id, modes, own.engagement if own else None, fallback)

            targets = responders(event.sender_id, event.content, ais, mode_of)
        else:
            targets = []
        self._apply(self._book.human_message(room_id, event.event_id, targets))

    async def _accept_invite(self, ai_id: str, room_id: str) -> None:
        try:
            await self._rooms_service.join(ai_id, room_id)
        except ApiError as exc:
            log.info("ai %s could not accept the invite to %s: %s", ai_id, room_id, exc.code)

    # -- drafts ---------------------------------------------------------------

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _apply(self, changes: Changes) -> None:
        for draft in changes.stop:
            scope = self._scopes.get(draft.draft_id)
            if scope is not None:
                scope.cancel()
        for draft in changes.start:
            self.stats.drafts += 1
            self._scopes[draft.draft_id] = trio.CancelScope()
            self._spawn(self._generate, draft)

    async def _generate(self, draft: Draft) -> None:
        scope = self._scopes[draft.draft_id]
        outcome: generation.Outcome = "cancelled"
        shutdown = True
        try:
            outcome = await generation.run_draft(self._deps, draft, scope)
            shutdown = False
        finally:
            self._scopes.pop(draft.draft_id, None)
            changes = self._book.finished(draft.draft_id, outcome)
            if not shutdown:
                self._apply(changes)

    # -- control (REST) -------------------------------------------------------

    def _ai_for(self, principal: Principal, ai_id: str) -> AiParticipant:
        ai = self._ai.get(ai_id)
        if ai is None or ai.tenant_id != principal.tenant_id:
            raise ApiError(ErrorCode.SW_AI_NOT_FOUND, f"no AI participant {ai_id[:80]!r}")
        return ai

    async def stop(self, principal: Principal, room_id: str, ai_id: str | None) -> list[str]:
        """Stop the room's generations (one AI's, or all). Returns the stopped draft ids."""
        # Stopping stores the partial answer: a write, so not for viewers.
        not_read_only(await self._readers.read(joined_member, room_id, principal.participant_id))
        if ai_id is not None:
            self._ai_for(principal, ai_id)
        changes = self._book.stop(room_id, ai_id)
        self._apply(changes)
        return [d.draft_id for d in changes.stop]

    async def engage(self, principal: Principal, room_id: str, ai_id: str) -> Draft:
        """Make the AI answer the room's latest message now, adding it first if needed."""
        self._ai_for(principal, ai_id)
        caller = principal.participant_id
        await self._readers.read(_check_can_send, room_id, caller)
        if self._book.busy(room_id, ai_id):
            raise _busy()
        if ai_id not in self._rooms.get(room_id, ()):
            await self._rooms_service.add_member(caller, room_id, ai_id, "member")
        trigger = await self._readers.read(generation.latest_message, room_id, ai_id)
        if trigger is None:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "the room has no message to answer")
        draft = self._book.engage(room_id, ai_id, trigger)
        if draft is None:
            raise _busy()
        self._apply(Changes(start=(draft,)))
        return draft

    def busy(self, room_id: str, ai_id: str) -> bool:
        return self._book.busy(room_id, ai_id)


def _busy() -> ApiError:
    return ApiError(ErrorCode.SW_AI_BUSY, "that AI is already answering in this room")


def _check_can_send(conn: Any, room_id: str, caller: str) -> None:
    room, member = writable_member(conn, room_id, caller)
    power.check_can_send(member.power_level, member.read_only, thresholds_of(room))
