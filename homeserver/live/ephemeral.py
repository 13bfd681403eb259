"""Presence and typing: in memory, timed on ``trio.current_time()``, never stored.

Both services keep a heap of deadlines and one sweeper task that sleeps until
the earliest; tests drive them with trio's ``MockClock``.

Presence frames go only to participants who share a room, only when the
state others see changes, and at most once per ``coalesce`` seconds per
participant: a participant flapping online/idle inside that window sends
nothing until it settles (the state at the end of the window is what goes out,
and nothing at all if it ended where it started).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import trio

from homeserver.clock import system_ms
from protocol.errors import ApiError, ErrorCode
from protocol.ids import AI_TYPES
from protocol.presence import (
    MANUAL_STATES,
    PresenceFacts,
    as_seen_by_others,
    effective,
    next_change,
)
from protocol.timefmt import iso_ms

TypesOf = Callable[[list[str]], Awaitable[dict[str, str]]]
# (participant_id, room_id) -> is that member read-only (a viewer)?
ReadOnlyOf = Callable[[str, str], Awaitable[bool]]
MAX_PRESENCE_IDS = 100


class EphemeralHub(Protocol):
    """What the services need of the hub: rooms and members, and a way out for frames
    (the hub itself in one process; homeserver.cluster's sender in a cluster)."""

    def rooms_of(self, participant_id: str) -> frozenset[str]: ...

    def members_of(self, room_id: str) -> frozenset[str]: ...

    def is_member(self, room_id: str, participant_id: str) -> bool: ...

    def send_ephemeral(self, participant_ids: Iterable[str], payload: dict[str, object]) -> int: ...


def _now_iso() -> str:
    return iso_ms(system_ms())


class _Sweeper:
    """A heap of (deadline, key) and a wake-up for a sleeping sweeper task."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, str, str]] = []
        self._wake = trio.Event()

    def push(self, deadline: float, kind: str, key: str) -> None:
        heapq.heappush(self.heap, (deadline, kind, key))
        if self.heap[0][0] == deadline:
            self._wake.set()

    def due(self, now: float) -> list[tuple[str, str]]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, kind, key = heapq.heappop(self.heap)
            out.append((kind, key))
        return out

    async def wait(self) -> None:
        self._wake = trio.Event()
        deadline = self.heap[0][0] if self.heap else float("inf")
        with trio.move_on_at(deadline):
            await self._wake.wait()


class PresenceService:
    def __init__(
        self,
        hub: EphemeralHub,
        types_of: TypesOf,
        *,
        tenant_id: str,
        idle_after: float,
        heartbeat_ttl: float,
        coalesce: float = 1.0,
        enabled: bool = True,
    ) -> None:
        self._hub = hub
        self._types_of = types_of
        self._tenant_id = tenant_id
        self._idle_after = idle_after
        self._ttl = heartbeat_ttl
        self._coalesce = coalesce
        self.enabled = enabled
        self._facts: dict[str, PresenceFacts] = {}
        self._shown_self: dict[str, str] = {}
        self._shown_others: dict[str, str] = {}
        self._sent_at: dict[str, float] = {}
        self._flush_pending: set[str] = set()
        self._sweeper = _Sweeper()
        self.frames_sent = 0

    # -- inputs -------------------------------------------------------------

    def _change(self, pid: str, **changes: object) -> None:
        facts = self._facts.get(pid, PresenceFacts())
        self._facts[pid] = dataclasses.replace(facts, **changes)  # type: ignore[arg-type]
        self._refresh(pid)

    def connected(self, pid: str, participant_type: str) -> None:
        facts = self._facts.get(pid, PresenceFacts())
        now = trio.current_time()
        self._change(
            pid,
            participant_type=participant_type,
            connections=facts.connections + 1,
            last_active=now,
        )

    def disconnected(self, pid: str) -> None:
        facts = self._facts.get(pid, PresenceFacts())
        self._change(pid, connections=max(0, facts.connections - 1))

    def heartbeat(self, pid: str, active: bool) -> None:
        now = trio.current_time()
        if active:
            self._change(pid, last_heartbeat=now, last_active=now)
        else:
            self._change(pid, last_heartbeat=now)

    def active(self, pid: str) -> None:
        self._change(pid, last_active=trio.current_time())

    def set_manual(self, pid: str, state: str) -> None:
        if state != "auto" and state not in MANUAL_STATES:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM,
                "state: must be one of online, idle, busy, appear_offline, auto",
            )
        now = trio.current_time()
        self._change(pid, manual=None if state == "auto" else state, last_active=now)

    # -- reads --------------------------------------------------------------

    def state_of(self, pid: str) -> str:
        facts = self._facts.get(pid)
        if facts is None:
            return "offline"
        return effective(
            facts, trio.current_time(), idle_after=self._idle_after, heartbeat_ttl=self._ttl
        )

    async def states_for(self, viewer: str, ids: list[str]) -> dict[str, str]:
        if len(ids) > MAX_PRESENCE_IDS:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM,
                f"ids: at most {MAX_PRESENCE_IDS} participant ids per request",
            )
        unknown = [i for i in ids if i not in self._facts]
        types = await self._types_of(unknown) if unknown else {}
        return {pid: self.seen_by(viewer, pid, types.get(pid)) for pid in ids}

    def seen_by(self, viewer: str, pid: str, participant_type: str | None = None) -> str:
        """``pid``'s state as ``viewer`` sees it: AI types always online, the owner
        sees the truth, others see ``appear_offline`` as ``offline``."""
        if participant_type in AI_TYPES:
            return "online"
        state = self.state_of(pid)
        return state if pid == viewer else as_seen_by_others(state)

    # -- outputs ------------------------------------------------------------

    def _refresh(self, pid: str) -> None:
        now = trio.current_time()
        facts = self._facts[pid]
        wake = next_change(facts, now, idle_after=self._idle_after, heartbeat_ttl=self._ttl)
        if wake is not None:
            self._sweeper.push(wake, "state", pid)
        self._maybe_send(pid, now)

    def _maybe_send(self, pid: str, now: float) -> None:
        if not self.enabled:
            return
        state = self.state_of(pid)
        if state == self._shown_self.get(pid, "offline"):
            return
        last = self._sent_at.get(pid)
        if last is not None and now - last < self._coalesce:
            if pid not in self._flush_pending:
                self._flush_pending.add(pid)
                self._sweeper.push(last + self._coalesce, "flush", pid)
            return
        self._send(pid, state, now)

    def _send(self, pid: str, state: str, now: float) -> None:
        self._sent_at[pid] = now
        self._shown_self[pid] = state
        frame = {
            "type": "presence",
            "participant_id": pid,
            "tenant_id": self._tenant_id,
            "ts": _now_iso(),
        }
        self.frames_sent += self._hub.send_ephemeral([pid], {**frame, "status": state})
        seen = as_seen_by_others(state)
        if seen != self._shown_others.get(pid, "offline"):
            self._shown_others[pid] = seen
            self.frames_sent += self._hub.send_ephemeral(
                self._audience(pid), {**frame, "status": seen}
            )
        facts = self._facts.get(pid)
        if (
            state == "offline"
            and facts is not None
            and facts.connections == 0
            and (facts.manual is None)
        ):
            self._forget(pid)

    def _audience(self, pid: str) -> Iterable[str]:
        audience: set[str] = set()
        for room_id in self._hub.rooms_of(pid):
            audience |= self._hub.members_of(room_id)
        audience.discard(pid)
        return audience

    def _forget(self, pid: str) -> None:
        for table in (self._facts, self._shown_self, self._shown_others, self._sent_at):
            table.pop(pid, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._sweeper.wait()
            now = trio.current_time()
            for kind, pid in self._sweeper.due(now):
                if pid not in self._facts:
                    continue
                if kind == "flush":
                    self._flush_pending.discard(pid)
                    self._maybe_send(pid, now)
                else:
                    self._refresh(pid)


class TypingService:
    """Who is typing where; one ``typing`` frame per change, to the other members."""

    def __init__(
        self,
        hub: EphemeralHub,
        *,
        tenant_id: str,
        timeout: float,
        read_only_of: ReadOnlyOf | None = None,
    ) -> None:
        self._hub = hub
        self._tenant_id = tenant_id
        self._timeout = timeout
        self._read_only_of = read_only_of
        self._until: dict[tuple[str, str], float] = {}
        self._sweeper = _Sweeper()

    async def request(self, pid: str, room_id: str, typing: bool) -> None:
        """A client's typing request (REST or stream): :meth:`set`, after the checks.

        Viewers are read-only (CONTRACT 6): ``typing: true`` from one is 403
        ``SW_ROOM_FORBIDDEN`` (it would announce a message they cannot send);
        ``typing: false`` is accepted, a no-op, so clearing never fails.
        """
        if not self._hub.is_member(room_id, pid):
            raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")
        if typing and self._read_only_of is not None and await self._read_only_of(pid, room_id):
            raise ApiError(ErrorCode.SW_ROOM_FORBIDDEN, "viewers are read-only: no typing")
        self.set(pid, room_id, typing)

    def set(self, pid: str, room_id: str, typing: bool) -> None:
        if not self._hub.is_member(room_id, pid):
            raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")
        key = (room_id, pid)
        if typing:
            deadline = trio.current_time() + self._timeout
            was_typing = key in self._until
            self._until[key] = deadline
            self._sweeper.push(deadline, room_id, pid)
            if not was_typing:
                self._announce(room_id, pid, True)
        else:
            self.clear(pid, room_id)

    def clear(self, pid: str, room_id: str) -> None:
        if self._until.pop((room_id, pid), None) is not None:
            self._announce(room_id, pid, False)

    def typing_in(self, room_id: str) -> list[str]:
        return sorted(p for (r, p) in self._until if r == room_id)

    def _announce(self, room_id: str, pid: str, typing: bool) -> None:
        others = self._hub.members_of(room_id) - {pid}
        self._hub.send_ephemeral(
            others,
            {
                "type": "typing",
                "room_id": room_id,
                "participant_id": pid,
                "typing": typing,
                "tenant_id": self._tenant_id,
                "ts": _now_iso(),
            },
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._sweeper.wait()
            now = trio.current_time()
            for room_id, pid in self._sweeper.due(now):
                until = self._until.get((room_id, pid))
                if until is not None and until <= now:
                    self.clear(pid, room_id)
