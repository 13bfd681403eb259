"""Sending, history and catch-up (CONTRACT sections 5 and 7).

Send order: idempotency (a retry never hits a limit), then the rate limit,
then content validation, then the writer transaction, which checks
membership, power and the room state, checks idempotency again (so
concurrent duplicates make exactly one event) and appends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from homeserver.clock import WallClock
from homeserver.live.hub import Hub
from homeserver.rooms.service import joined_member, thresholds_of, writer_member
from homeserver.store.database import Readers, Writer
from protocol import power
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, EventDraft, EventType
from protocol.ratelimit import SlidingWindowLimiter, retry_after_seconds
from protocol.validation import validate_content
from storage import events as event_store
from storage import rooms as room_store

MAX_UUID = 255


@dataclass(frozen=True, slots=True)
class SendRequest:
    caller: str
    room_id: str
    content: dict[str, Any]
    event_uuid: str | None = None
    as_participant_id: str | None = None
    reply_to: str | None = None  # ScaiGrid /reply: the parent must exist in the room
    # Run first in the send's own transaction, with (conn, now_ms): a stream
    # re-checks its credential there, so a send ordered after a revocation fails.
    credential_check: Callable[[sqlite3.Connection, int], None] | None = None
    # AI replies (homeserver.ai): the runner applies the AI's own per-room limit.
    rate_exempt: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    has_more: bool
    next_cursor: str | None


class Limiter(Protocol):
    """The send rate limit: this process's memory, or one limit across a cluster
    (homeserver.cluster.ratelimit)."""

    async def try_acquire(self, key: str, *, limit: int, window: float) -> float:
        """0.0 when allowed (recorded); otherwise seconds until a slot frees."""

    async def refund(self, key: str) -> None: ...


class LocalLimiter:
    """``protocol.ratelimit.SlidingWindowLimiter`` on trio's clock."""

    def __init__(self) -> None:
        self._limiter = SlidingWindowLimiter()

    async def try_acquire(self, key: str, *, limit: int, window: float) -> float:
        return self._limiter.try_acquire(key, trio.current_time(), limit=limit, window=window)

    async def refund(self, key: str) -> None:
        self._limiter.refund(key)


@dataclass(frozen=True, slots=True)
class MessageLimits:
    max_content_bytes: int
    idempotency_window_ms: int
    rate_limit_window: float
    rate_limit_for: Callable[[str], int]


class MessageService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        hub: Hub,
        clock: WallClock,
        limits: MessageLimits,
        limiter: Limiter | None = None,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._hub = hub
        self._clock = clock
        self._limits = limits
        self._limiter: Limiter = limiter or LocalLimiter()
        self.rate_limit_refusals = 0  # read by homeserver.observe.metrics
        self._inflight: dict[tuple[str, str], trio.Event] = {}
        # Told about every message this service stored (typing clears, presence wakes).
        self.on_sent: Callable[[Event], None] = lambda event: None

    # -- send ---------------------------------------------------------------

    async def send(self, req: SendRequest) -> Event:
        if req.event_uuid is None:
            return await self._send_new(req)
        if not req.event_uuid or len(req.event_uuid) > MAX_UUID:
            raise ApiError(ErrorCode.SW_INVALID_PARAM, "event_uuid: 1 to 255 characters")
        key = (req.as_participant_id or req.caller, req.event_uuid)
        # Single flight: a duplicate that arrives while its twin is still being
        # stored waits for the twin instead of taking a rate-limit slot. This is
        # per process; across a cluster the check in the writer transaction
        # decides (it runs after the batch took the stream_head lock, so it sees
        # a twin committed by any process).
        while (flight := self._inflight.get(key)) is not None:
            await flight.wait()
        done = self._inflight[key] = trio.Event()
        try:
            earlier = await self._readers.read(self._earlier, key[0], req.event_uuid)
            # A retry by the caller who made the event skips the rate limit. Anyone
            # else naming the same key goes through every check in the transaction,
            # so a key never hands an event to someone who may not see it.
            if (
                earlier is not None
                and earlier.actor_id == req.caller
                and (earlier.room_id == req.room_id)
            ):
                if req.credential_check is not None:
                    await self._readers.read(req.credential_check, self._clock())
                return earlier
            return await self._send_new(req)
        finally:
            del self._inflight[key]
            done.set()

    async def _send_new(self, req: SendRequest) -> Event:
        sender = req.as_participant_id or req.caller
        validate_content(req.content, max_bytes=self._limits.max_content_bytes)
        if not req.rate_exempt:
            await self._check_rate(req.caller)
        try:
            event = await self._writer.write(self._send_txn, req, sender, self._clock())
        except ApiError:
            if not req.rate_exempt:
                await self._limiter.refund(req.caller)
            raise
        self.on_sent(event)
        return event

    def _earlier(self, conn: sqlite3.Connection, sender: str, event_uuid: str) -> Event | None:
        return event_store.idempotent_event(
            conn,
            sender_id=sender,
            event_uuid=event_uuid,
            not_before_ms=self._clock() - self._limits.idempotency_window_ms,
        )

    async def _check_rate(self, caller: str) -> None:
        wait = await self._limiter.try_acquire(
            caller,
            limit=self._limits.rate_limit_for(caller),
            window=self._limits.rate_limit_window,
        )
        if wait > 0:
            self.rate_limit_refusals += 1
            seconds = retry_after_seconds(wait)
            raise ApiError(
                ErrorCode.SW_RATE_LIMIT_EXCEEDED,
                f"too many messages; retry in {seconds} s",
                retry_after=seconds,
            )

    def _send_txn(self, conn: sqlite3.Connection, req: SendRequest, sender: str, now: int) -> Event:
        if req.credential_check is not None:
            req.credential_check(conn, now)
        room, actor = writer_member(conn, req.room_id, req.caller)
        thresholds = thresholds_of(room)
        power.check_can_send(actor.power_level, actor.read_only, thresholds)
        if req.as_participant_id is not None and req.as_participant_id != req.caller:
            power.check_send_on_behalf(actor.power_level, thresholds)
            target = room_store.get_membership(conn, req.room_id, req.as_participant_id)
            if target is None or target.membership != "join":
                raise ApiError(
                    ErrorCode.SW_PARTICIPANT_NOT_FOUND,
                    "as_participant_id: must be a member of the room",
                )
        if req.event_uuid is not None:
            # Checked after authorisation, inside the writer: concurrent duplicates
            # from the same effective sender make exactly one event.
            earlier = self._earlier(conn, sender, req.event_uuid)
            if earlier is not None and earlier.room_id == req.room_id:
                return earlier
        if req.reply_to is not None:
            parent = event_store.get_event(conn, req.reply_to)
            if parent is None or parent.room_id != req.room_id:
                raise ApiError(ErrorCode.SW_EVENT_NOT_FOUND, "no such message in this room")
        draft = EventDraft(
            req.room_id,
            EventType.MESSAGE,
            sender,
            req.caller,
            req.content,
            event_uuid=req.event_uuid,
        )
        return event_store.append_event_txn(conn, draft, now_ms=now)

    # -- history ------------------------------------------------------------

    async def history(
        self, caller: str, room_id: str, *, from_pos: int | None, direction: str, limit: int
    ) -> Page:
        def read(conn: sqlite3.Connection) -> list[Event]:
            joined_member(conn, room_id, caller)
            return event_store.room_history(
                conn,
                room_id,
                from_pos=from_pos,
                direction="back" if direction == "back" else "forward",
                limit=limit + 1,
            )

        events = await self._readers.read(read)
        has_more = len(events) > limit
        events = events[:limit]
        cursor = str(events[-1].stream_position) if events else None
        return Page(events, has_more, cursor)

    async def recent(self, caller: str, room_id: str, limit: int) -> list[Event]:
        page = await self.history(caller, room_id, from_pos=None, direction="back", limit=limit)
        return page.events

    # -- sync ---------------------------------------------------------------

    async def replay(self, participant_id: str, since: int, limit: int) -> list[Event]:
        return await self._readers.read(
            lambda conn: event_store.visible_since(conn, participant_id, since=since, limit=limit)
        )

    async def sync(self, caller: str, *, since: int, limit: int, timeout_ms: int) -> Page:
        """Catch up; with nothing new, long-poll until an event arrives or time runs out."""
        deadline = trio.current_time() + timeout_ms / 1000
        while True:
            waiter = self._hub.waiter(caller)
            events = await self.replay(caller, since, limit + 1)
            if events or trio.current_time() >= deadline:
                break
            with trio.move_on_at(deadline):
                await waiter.wait()
            if not waiter.is_set():
                self._hub.drop_waiter(caller, waiter)
        has_more = len(events) > limit
        events = events[:limit]
        cursor = str(events[-1].stream_position) if events else str(since)
        return Page(events, has_more, cursor)
