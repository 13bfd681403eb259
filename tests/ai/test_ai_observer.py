"""The runner's hub observer: rooms without AI members pass after one dict lookup."""

from __future__ import annotations

from typing import Any

from bridges.models import ModelRegistry
from conf.sections import AiSettings
from homeserver.ai import AiRunner
from homeserver.ai.runner import QUEUE
from homeserver.live.hub import Hub
from protocol.events import Event, EventType
from storage.ai import AiParticipant

AI = AiParticipant("ai-1", "ten_default", "one", "One", "bot", "dev/echo", "", None, "p-a", 0)


def event(
    pos: int, room: str, kind: EventType, content: dict[str, Any], sender: str = "p-a"
) -> Event:
    return Event(pos, f"evt-{pos}", room, kind, sender, sender, content, 0, pos, (), "h")


def runner() -> AiRunner:
    none: Any = None
    return AiRunner(
        hub=Hub("ten_default", lambda b: b),
        readers=none,
        messages=none,
        rooms=none,
        models=ModelRegistry([]),
        settings=AiSettings(),
    )


def test_only_rooms_with_ai_members_reach_the_runner() -> None:
    r = runner()
    r.added(AI)
    msg = {"msgtype": "swp.text", "body": "hi"}
    r.observe([event(1, "room-x", EventType.MESSAGE, msg)])
    assert r.stats.observed == 0
    join = {"participant_id": "ai-1", "membership": "join"}
    r.observe(
        [event(2, "room-y", EventType.MEMBER, join), event(3, "room-y", EventType.MESSAGE, msg)]
    )
    assert r.stats.observed == 2  # the join was indexed before the message was looked at
    assert r.ai_rooms() == {"room-y": frozenset({"ai-1"})}
    human_join = {"participant_id": "p-b", "membership": "join"}
    r.observe([event(4, "room-y", EventType.MEMBER, human_join)])  # not for the runner
    leave = {"participant_id": "ai-1", "membership": "leave"}
    r.observe(
        [event(5, "room-y", EventType.MEMBER, leave), event(6, "room-y", EventType.MESSAGE, msg)]
    )
    assert r.stats.observed == 3
    assert r.ai_rooms() == {}


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    r = runner()
    r.added(AI)
    r.observe(
        [event(1, "room-y", EventType.MEMBER, {"participant_id": "ai-1", "membership": "join"})]
    )
    msg = {"msgtype": "swp.text", "body": "hi"}
    r.observe([event(2 + i, "room-y", EventType.MESSAGE, msg) for i in range(QUEUE + 10)])
    assert r.stats.dropped == 11
