"""REST under concurrency: many writers into one room keep a single, gap-free chain;
concurrent duplicates collapse into one event (CONTRACT 2, 7)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support import Api, User, api_for, make_settings, start_server


@pytest.fixture
async def fast_api(tmp_path: Path) -> AsyncIterator[Api]:
    """A server without a message rate limit (0 = unlimited)."""
    settings = make_settings(tmp_path / "data", rate_limit_messages=0)
    async with start_server(settings) as running, api_for(running) as api:
        yield api


async def full_history(api: Api, user: User, room: str, page: int = 50) -> list[Any]:
    events: list[Any] = []
    cursor: str | None = None
    while True:
        query = f"?direction=forward&limit={page}" + (f"&from={cursor}" if cursor else "")
        r = await api.call("GET", f"/v1/rooms/{room}/messages{query}", user)
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["data"]["items"]
        if not body["meta"]["has_more"]:
            return events
        cursor = body["meta"]["next_cursor"]
        assert cursor == str(events[-1]["stream_position"])


def assert_chain(events: list[Any]) -> None:
    """Positions strictly increase, ids are unique, each event chains onto the one before."""
    positions = [e["stream_position"] for e in events]
    assert all(a < b for a, b in itertools.pairwise(positions)), positions
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    first = events[0]
    assert first["type"] == "swp.room.create"
    assert first["depth"] == 1
    assert first["prev_event_ids"] == []
    for prev, event in itertools.pairwise(events):
        assert event["prev_event_ids"] == [prev["id"]], (prev, event)
        assert event["depth"] == prev["depth"] + 1, (prev, event)


async def send_many(
    api: Api, user: User, room: str, count: int, acked: list[Any], tag: str
) -> None:
    async def one(i: int) -> None:
        event = await api.send(user, room, f"{tag}-{i}")
        acked.append(event)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)


async def test_two_concurrent_writers_make_one_chain(fast_api: Api) -> None:
    api = fast_api
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    acked: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_many, api, alice, room, 100, acked, "a")
        nursery.start_soon(send_many, api, bob, room, 100, acked, "b")
    assert len(acked) == 200

    events = await full_history(api, alice, room)
    assert_chain(events)
    messages = [e for e in events if e["type"] == "swp.room.message"]
    assert len(messages) == 200
    counts = Counter(e["id"] for e in events)
    for event in acked:
        assert counts[event["id"]] == 1
    # what each writer was told is exactly what history holds
    by_id = {e["id"]: e for e in events}
    for event in acked:
        assert by_id[event["id"]] == event
    bodies = sorted(e["content"]["body"] for e in messages)
    assert bodies == sorted([f"a-{i}" for i in range(100)] + [f"b-{i}" for i in range(100)])
    # history read newest-first is the exact reverse
    r = await api.call("GET", f"/v1/rooms/{room}/messages?limit=200", bob)
    back = r.json()["data"]["items"]
    assert [e["id"] for e in back] == [e["id"] for e in reversed(events)][:200]


async def test_concurrent_writers_across_rooms_share_one_position_sequence(
    fast_api: Api,
) -> None:
    api = fast_api
    alice = await api.register("alice")
    bob = await api.register("bob")
    room1 = await api.room(alice, bob, name="one")
    room2 = await api.room(bob, alice, name="two")
    acked: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_many, api, alice, room1, 40, acked, "a1")
        nursery.start_soon(send_many, api, bob, room1, 40, acked, "b1")
        nursery.start_soon(send_many, api, alice, room2, 40, acked, "a2")
        nursery.start_soon(send_many, api, bob, room2, 40, acked, "b2")
    history1 = await full_history(api, alice, room1, page=17)
    history2 = await full_history(api, bob, room2, page=200)
    assert_chain(history1)
    assert_chain(history2)
    positions = [e["stream_position"] for e in history1 + history2]
    assert len(set(positions)) == len(positions)
    assert {e["id"] for e in acked} <= {e["id"] for e in history1 + history2}
    assert sum(e["type"] == "swp.room.message" for e in history1) == 80
    assert sum(e["type"] == "swp.room.message" for e in history2) == 80


async def test_concurrent_duplicates_make_one_event(api: Api) -> None:
    # default settings (rate limit 60/min): the 20 attempts fit in the budget
    alice = await api.register("alice")
    room = await api.room(alice)
    responses: list[httpx.Response] = []

    async def attempt() -> None:
        responses.append(
            await api.call(
                "POST",
                f"/v1/rooms/{room}/send",
                alice,
                json={"content": {"msgtype": "swp.text", "body": "dup"}, "event_uuid": "same"},
            )
        )

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(attempt)
    assert len(responses) == 20
    assert {r.status_code for r in responses} == {200}
    events = {r.json()["data"]["id"] for r in responses}
    assert len(events) == 1
    bodies = [r.json()["data"] for r in responses]
    assert all(b == bodies[0] for b in bodies)
    history = await full_history(api, alice, room)
    assert_chain(history)
    messages = [e for e in history if e["type"] == "swp.room.message"]
    assert [e["id"] for e in messages] == list(events)


async def test_concurrent_duplicates_scaigrid_form(fast_api: Api) -> None:
    api = fast_api
    alice = await api.register("alice")
    room = await api.room(alice)
    responses: list[httpx.Response] = []

    async def attempt() -> None:
        responses.append(
            await api.call(
                "POST",
                f"/v1/rooms/{room}/messages",
                alice,
                json={"content": "dup", "event_uuid": "sg-same"},
            )
        )

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(attempt)
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    history = await full_history(api, alice, room)
    assert sum(e["type"] == "swp.room.message" for e in history) == 1


async def test_concurrent_dm_creation_makes_one_room(fast_api: Api) -> None:
    api = fast_api
    alice = await api.register("alice")
    bob = await api.register("bob")
    responses: list[httpx.Response] = []

    async def attempt(me: User, other: User) -> None:
        responses.append(
            await api.call(
                "POST", "/v1/rooms/dm", me, json={"participant_id": other.participant_id}
            )
        )

    async with trio.open_nursery() as nursery:
        for i in range(20):
            me, other = (alice, bob) if i % 2 else (bob, alice)
            nursery.start_soon(attempt, me, other)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 19}
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    rooms = await api.ok("GET", "/v1/rooms", alice)
    assert len(rooms["items"]) == 1


async def test_concurrent_joins_each_join_once(fast_api: Api) -> None:
    api = fast_api
    owner = await api.register("owner")
    room = await api.room(owner, is_public=True)
    users = [await api.register(f"user{i}") for i in range(5)]

    async def join(user: User) -> None:
        await api.ok("POST", f"/v1/rooms/{room}/join", user)

    async with trio.open_nursery() as nursery:
        for user in users:
            for _ in range(4):
                nursery.start_soon(join, user)
    history = await full_history(api, owner, room)
    assert_chain(history)
    joins = Counter(
        e["content"]["participant_id"]
        for e in history
        if e["type"] == "swp.room.member" and e["content"]["membership"] == "join"
    )
    for user in users:
        assert joins[user.participant_id] == 1
    data = await api.ok("GET", f"/v1/rooms/{room}", owner)
    assert data["member_count"] == 6
