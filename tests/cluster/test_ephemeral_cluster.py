"""Presence and typing across processes, in one trio run: two (or three) nodes,
each with its own hub and services, on one MemoryBus, under MockClock.

One frame per change cluster-wide (only the lease holder's leave the node);
every node holds the same state; a killed node's users go offline; the lead
fails over and the new leader sends what the dead one never did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.testing

from homeserver.cluster.bus import MemoryBus
from homeserver.cluster.ephemeral import ClusterEphemeral, ClusterPresence, ClusterTyping
from homeserver.live.hub import Hub

ROOM = "room-1"
LIVENESS = 1.5


@dataclass(eq=False)
class Conn:
    participant_id: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    def deliver_events(self, items: list[tuple[int, bytes]]) -> None:
        self.frames.extend(orjson.loads(frame) for _, frame in items)

    def deliver_ephemeral(self, frame: bytes) -> None:
        self.frames.extend(orjson.loads(line) for line in frame.splitlines())

    def of(self, kind: str, pid: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f["type"] == kind and (pid is None or f["participant_id"] == pid)
        ]


async def no_types(ids: list[str]) -> dict[str, str]:
    return {}


@dataclass
class Node:
    name: str
    hub: Hub
    eph: ClusterEphemeral
    presence: ClusterPresence
    typing: ClusterTyping
    scope: trio.CancelScope


@asynccontextmanager
async def nodes(bus: MemoryBus, *names: str) -> AsyncIterator[dict[str, Node]]:
    async with trio.open_nursery() as nursery:
        out: dict[str, Node] = {}
        for name in names:
            hub = Hub("t", lambda payload: payload + b"\n")
            hub.load_memberships([(ROOM, "alice"), (ROOM, "bob")], 0)
            eph = ClusterEphemeral(bus, hub, node_id=name, prefix="hs:t", liveness=LIVENESS)
            presence = ClusterPresence(
                eph.sender,
                no_types,
                inputs=eph.inputs,
                tenant_id="t",
                idle_after=300.0,
                heartbeat_ttl=120.0,
                coalesce=0.1,
            )
            typing = ClusterTyping(eph.sender, inputs=eph.inputs, tenant_id="t", timeout=4.0)
            eph.attach(presence, typing)

            def on_connections(sub: Any, delta: int, presence: ClusterPresence = presence) -> None:
                if delta > 0:
                    presence.connected(sub.participant_id, "human")
                else:
                    presence.disconnected(sub.participant_id)

            hub.on_connections = on_connections
            scope = trio.CancelScope()

            async def run(eph: ClusterEphemeral = eph, scope: trio.CancelScope = scope) -> None:
                with scope:
                    await eph.run()

            nursery.start_soon(run)
            out[name] = Node(name, hub, eph, presence, typing, scope)
            await trio.sleep(0.5)  # the first node takes the lead
        await trio.sleep(1.0)
        yield out
        nursery.cancel_scope.cancel()


def leader(of: dict[str, Node]) -> list[str]:
    return [n.name for n in of.values() if n.eph.lease.is_leader]


async def test_one_frame_per_change_and_one_state_everywhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    async with nodes(bus, "a", "b", "c") as of:
        assert leader(of) == ["a"]
        bob = Conn("bob")
        of["c"].hub.attach(bob)
        alice = Conn("alice")
        of["b"].hub.attach(alice)  # alice connects on a follower
        await trio.sleep(0.5)
        assert [f["status"] for f in bob.of("presence", "alice")] == ["online"]
        assert [n.presence.state_of("alice") for n in of.values()] == ["online"] * 3
        of["b"].typing.set("alice", ROOM, True)
        await trio.sleep(0.1)
        assert [f["typing"] for f in bob.of("typing", "alice")] == [True]
        assert [n.typing.typing_in(ROOM) for n in of.values()] == [["alice"]] * 3
        await trio.sleep(5)  # the typing timeout runs on every node; one frame leaves
        assert [f["typing"] for f in bob.of("typing", "alice")] == [True, False]
        of["b"].hub.detach(alice)
        await trio.sleep(0.5)
        assert [f["status"] for f in bob.of("presence", "alice")] == ["online", "offline"]
        assert [n.presence.state_of("alice") for n in of.values()] == ["offline"] * 3


async def test_killed_leader_fails_over_and_its_users_go_offline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    async with nodes(bus, "a", "b") as of:
        assert leader(of) == ["a"]
        bob, alice = Conn("bob"), Conn("alice")
        of["b"].hub.attach(bob)
        of["a"].hub.attach(alice)
        await trio.sleep(0.5)
        assert of["b"].presence.state_of("alice") == "online"
        of["a"].scope.cancel()  # kill -9: no goodbye, the lease and liveness key expire
        await trio.sleep(LIVENESS + 1)
        assert of["b"].presence.state_of("alice") == "offline"
        await trio.sleep(4)  # the lease (3 s) expires; b takes it and sends the held frame
        assert leader(of) == ["b"]
        assert [f["status"] for f in bob.of("presence", "alice")] == ["online", "offline"]


async def test_a_late_node_catches_up_from_the_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = MemoryBus()
    async with nodes(bus, "a") as first:
        first["a"].hub.attach(Conn("alice"))
        first["a"].presence.set_manual("bob", "busy")
        await trio.sleep(0.5)
        async with nodes(bus, "b") as late:
            await trio.sleep(0.5)  # hello -> a's full set; the manual hash
            assert late["b"].presence.state_of("alice") == "online"
            assert late["b"].presence.state_of("bob") == "busy"


async def test_bus_down_drops_nobody(autojump_clock: trio.testing.MockClock) -> None:
    bus = MemoryBus()
    async with nodes(bus, "a", "b") as of:
        of["a"].hub.attach(Conn("alice"))
        await trio.sleep(0.5)
        bus.fail()  # nobody can tell who is gone: keep what is known
        await trio.sleep(LIVENESS * 3)
        assert of["b"].presence.state_of("alice") == "online"
        bus.restore()
        await trio.sleep(LIVENESS * 3)
        assert of["b"].presence.state_of("alice") == "online"
