"""The send rate limit under trio's MockClock: 60 per rolling minute, per caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from homeserver.live.hub import Hub
from homeserver.rooms.messages import MessageLimits, MessageService, SendRequest
from protocol.errors import ApiError, ErrorCode
from protocol.events import Event, EventDraft, EventType, build_event


class FakeWriter:
    """Stores nothing: builds the event the send transaction would have stored."""

    def __init__(self) -> None:
        self.position = 0
        self.refuse: set[str] = set()

    async def write(self, fn: Callable[..., Any], req: SendRequest, *args: Any) -> Event:
        if req.room_id in self.refuse:
            raise ApiError(ErrorCode.SW_NOT_MEMBER, "you are not a member of this room")
        self.position += 1
        draft = EventDraft(req.room_id, EventType.MESSAGE, req.caller, req.caller, req.content)
        return build_event(
            draft, stream_position=self.position, origin_ts_ms=0, prev_event_ids=(), prev_depth=0
        )


def service(limit_for: Callable[[str], int]) -> tuple[MessageService, FakeWriter]:
    writer = FakeWriter()
    limits = MessageLimits(
        max_content_bytes=65536,
        idempotency_window_ms=300_000,
        rate_limit_window=60.0,
        rate_limit_for=limit_for,
    )
    svc = MessageService(writer, None, Hub("t", bytes), lambda: 0, limits)  # type: ignore[arg-type]
    return svc, writer


async def send(svc: MessageService, caller: str = "alice", room: str = "room-1") -> Event:
    return await svc.send(SendRequest(caller, room, {"body": "hi"}))


async def test_sixty_per_rolling_minute(autojump_clock: trio.testing.MockClock) -> None:
    svc, _ = service(lambda pid: 60)
    for _ in range(60):
        await send(svc)
        await trio.sleep(0.5)  # 60 sends over 30 s
    with pytest.raises(ApiError) as refused:
        await send(svc)
    assert refused.value.code is ErrorCode.SW_RATE_LIMIT_EXCEEDED
    # The oldest send leaves the window 60 s after it was made: 30 s from now.
    assert refused.value.retry_after == 30
    await send(svc, caller="bob")  # per caller
    await trio.sleep(29)
    with pytest.raises(ApiError):
        await send(svc)
    await trio.sleep(1.01)
    await send(svc)  # the first send has rolled out of the window


async def test_exempt_and_refunded(autojump_clock: trio.testing.MockClock) -> None:
    svc, writer = service(lambda pid: 0 if pid == "bot" else 2)
    for _ in range(500):
        await send(svc, caller="bot")  # 0 = exempt
    writer.refuse.add("room-x")
    for _ in range(5):  # refused writes do not use the allowance up
        with pytest.raises(ApiError) as refused:
            await send(svc, room="room-x")
        assert refused.value.code is ErrorCode.SW_NOT_MEMBER
    await send(svc)
    await send(svc)
    with pytest.raises(ApiError) as limited:
        await send(svc)
    assert limited.value.code is ErrorCode.SW_RATE_LIMIT_EXCEEDED
