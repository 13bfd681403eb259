"""Presence and typing under trio's MockClock (autojump): no real sleeps.

Every test names ``autojump_clock`` itself: pytest-trio takes the clock from the
test's own arguments, not from a fixture's dependencies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import trio

from homeserver.live.ephemeral import PresenceService, TypingService
from homeserver.live.hub import Hub
from protocol.errors import ApiError

ROOM = "room-1"
OTHER_ROOM = "room-2"


@dataclass(eq=False)
class Conn:
    participant_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    def deliver_events(self, items: list[tuple[int, bytes]]) -> None:
        self.frames.extend(orjson.loads(frame) for _, frame in items)

    def deliver_ephemeral(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


def make_hub() -> Hub:
    hub = Hub("t", lambda payload: payload)
    hub.load_memberships([(ROOM, "alice"), (ROOM, "bob"), (OTHER_ROOM, "stranger")], 0)
    return hub


async def no_types(ids: list[str]) -> dict[str, str]:
    return {}


@pytest.fixture
async def presence(autojump_clock: trio.testing.MockClock) -> AsyncIterator[PresenceService]:
    hub = make_hub()
    service = PresenceService(
        hub, no_types, tenant_id="t", idle_after=300, heartbeat_ttl=120, coalesce=1.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


def hub_of(service: PresenceService | TypingService) -> Hub:
    assert isinstance(service._hub, Hub)
    return service._hub


def watch(service: PresenceService, pid: str) -> Conn:
    conn = Conn(pid)
    hub_of(service).attach(conn)
    return conn


def statuses(conn: Conn, pid: str) -> list[str]:
    return [f["status"] for f in conn.of("presence") if f["participant_id"] == pid]


async def test_online_then_idle_then_offline(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    bob = watch(presence, "bob")
    presence.connected("alice", "human")
    assert presence.state_of("alice") == "online"
    await trio.sleep(299)
    assert presence.state_of("alice") == "online"
    await trio.sleep(2)
    assert presence.state_of("alice") == "idle"
    presence.disconnected("alice")
    await trio.sleep(2)
    assert statuses(bob, "alice") == ["online", "idle", "offline"]


async def test_activity_keeps_online(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    presence.connected("alice", "human")
    for _ in range(5):
        await trio.sleep(200)
        presence.active("alice")
    assert presence.state_of("alice") == "online"


async def test_heartbeat_without_stream_expires_after_ttl(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    bob = watch(presence, "bob")
    presence.heartbeat("alice", active=True)
    assert presence.state_of("alice") == "online"
    await trio.sleep(119)
    assert presence.state_of("alice") == "online"
    await trio.sleep(2)
    assert presence.state_of("alice") == "offline"
    assert statuses(bob, "alice") == ["online", "offline"]


async def test_busy_sticks_until_auto(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    presence.connected("alice", "human")
    presence.set_manual("alice", "busy")
    await trio.sleep(1000)
    presence.active("alice")
    assert presence.state_of("alice") == "busy"
    presence.disconnected("alice")
    assert presence.state_of("alice") == "busy"
    presence.set_manual("alice", "auto")
    assert presence.state_of("alice") == "offline"


async def test_appear_offline_is_offline_to_others_only(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    bob = watch(presence, "bob")
    alice = watch(presence, "alice")
    presence.connected("alice", "human")
    await trio.sleep(2)
    presence.set_manual("alice", "appear_offline")
    await trio.sleep(2)
    assert statuses(bob, "alice") == ["online", "offline"]
    assert statuses(alice, "alice")[-1] == "appear_offline"
    assert await presence.states_for("bob", ["alice"]) == {"alice": "offline"}
    assert await presence.states_for("alice", ["alice"]) == {"alice": "appear_offline"}


async def test_devices_combine_to_most_awake(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    presence.connected("alice", "human")
    presence.connected("alice", "human")
    presence.disconnected("alice")
    assert presence.state_of("alice") == "online"
    presence.disconnected("alice")
    assert presence.state_of("alice") == "offline"


async def test_ai_participants_are_always_online(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    presence.connected("bot-1", "bot")
    await trio.sleep(10_000)
    assert presence.state_of("bot-1") == "online"

    async def bot_types(ids: list[str]) -> dict[str, str]:
        return dict.fromkeys(ids, "model")

    presence._types_of = bot_types
    assert await presence.states_for("alice", ["ai-x"]) == {"ai-x": "online"}


async def test_flapping_is_coalesced(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    bob = watch(presence, "bob")
    presence.connected("alice", "human")  # sent at once: online
    for _ in range(50):  # flap inside the coalescing window
        presence.set_manual("alice", "idle")
        presence.set_manual("alice", "online")
    await trio.sleep(5)
    assert statuses(bob, "alice") == ["online"]
    for _ in range(50):
        presence.set_manual("alice", "online")
        presence.set_manual("alice", "idle")
    await trio.sleep(5)
    # At most one frame per window, and it carries the settled state.
    assert statuses(bob, "alice") == ["online", "idle"]


async def test_presence_only_reaches_those_who_share_a_room(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    stranger = watch(presence, "stranger")
    presence.connected("alice", "human")
    await trio.sleep(400)
    assert stranger.of("presence") == []


async def test_too_many_ids_is_refused(
    presence: PresenceService, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ApiError) as info:
        await presence.states_for("alice", [f"p-{i}" for i in range(101)])
    assert info.value.http_status == 400


@pytest.fixture
async def typing(autojump_clock: trio.testing.MockClock) -> AsyncIterator[TypingService]:
    service = TypingService(make_hub(), tenant_id="t", timeout=4.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


def typing_flags(conn: Conn) -> list[bool]:
    return [f["typing"] for f in conn.of("typing")]


async def test_typing_auto_clears_once(
    typing: TypingService, autojump_clock: trio.testing.MockClock
) -> None:
    bob, alice = Conn("bob"), Conn("alice")
    hub_of(typing).attach(bob)
    hub_of(typing).attach(alice)
    typing.set("alice", ROOM, True)
    await trio.sleep(2)
    typing.set("alice", ROOM, True)  # re-arms, sends nothing new
    await trio.sleep(3.9)
    assert typing_flags(bob) == [True]
    await trio.sleep(0.2)
    assert typing_flags(bob) == [True, False]
    await trio.sleep(30)
    assert typing_flags(bob) == [True, False]
    assert alice.of("typing") == []  # never to the typist


async def test_typing_false_clears_early_and_once(
    typing: TypingService, autojump_clock: trio.testing.MockClock
) -> None:
    bob = Conn("bob")
    hub_of(typing).attach(bob)
    typing.set("alice", ROOM, True)
    typing.set("alice", ROOM, False)
    typing.set("alice", ROOM, False)
    await trio.sleep(10)
    assert typing_flags(bob) == [True, False]
    assert typing.typing_in(ROOM) == []


async def test_typing_needs_membership(
    typing: TypingService, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ApiError) as info:
        typing.set("stranger", ROOM, True)
    assert info.value.http_status == 403
