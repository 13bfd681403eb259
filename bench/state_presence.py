"""Presence CPU cost and state-snapshot latency (issue 5). Run by hand:

    .venv/bin/python bench/state_presence.py presence --seconds 20
    .venv/bin/python bench/state_presence.py snapshot --members 1000

``presence``: 1,000 connected participants in 100 rooms of 10, each flapping
online/idle (a manual state change) at random, on average every 2 s, for
``--seconds`` of real time. Frames are encoded and handed to every recipient
connection exactly as in the server (Hub.send_ephemeral + the WebSocket frame
encoder); the connection only counts the bytes instead of writing a socket.
The same run with presence off drives the same schedule without calling the
presence service; the difference in process CPU time is presence's cost.

``snapshot``: an in-process server, a room with ``--members`` members, and
``GET /v1/rooms/{id}/state`` timed over HTTP (p50/p99 of 200 requests).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homeserver.live.ephemeral import PresenceService
from homeserver.live.hub import Hub
from homeserver.stream.connection import encode_text_frame


class CountingConn:
    def __init__(self, pid: str) -> None:
        self.participant_id = pid
        self.frames = 0
        self.bytes = 0

    def deliver_events(self, items: list[tuple[int, bytes]]) -> None:
        self.frames += len(items)
        self.bytes += sum(len(frame) for _, frame in items)

    def deliver_ephemeral(self, frame: bytes) -> None:
        self.frames += 1
        self.bytes += len(frame)


async def no_types(ids: list[str]) -> dict[str, str]:
    return {}


async def presence_run(enabled: bool, seconds: float, people: int, rooms: int) -> dict[str, float]:
    hub = Hub("t", encode_text_frame)
    pids = [f"p-{n}" for n in range(people)]
    hub.load_memberships([(f"room-{n % rooms}", pid) for n, pid in enumerate(pids)], 0)
    conns = [CountingConn(pid) for pid in pids]
    for conn in conns:
        hub.attach(conn)
    presence = PresenceService(
        hub, no_types, tenant_id="t", idle_after=300, heartbeat_ttl=120, coalesce=1.0
    )
    rng = random.Random(7)
    changes = 0

    async def flap(pid: str) -> None:
        nonlocal changes
        state = "online"
        while True:
            await trio.sleep(rng.expovariate(0.5))
            state = "idle" if state == "online" else "online"
            changes += 1
            if enabled:
                presence.set_manual(pid, state)

    cpu0 = time.process_time()
    async with trio.open_nursery() as nursery:
        if enabled:
            await nursery.start(presence.run)
            for pid in pids:
                presence.connected(pid, "human")
        for pid in pids:
            nursery.start_soon(flap, pid)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    cpu = time.process_time() - cpu0
    return {
        "cpu_seconds": cpu,
        "cpu_percent_of_one_core": 100 * cpu / seconds,
        "state_changes": changes,
        "frames_delivered": sum(c.frames for c in conns),
    }


def presence_main(args: argparse.Namespace) -> None:
    for enabled in (False, True):
        result = trio.run(presence_run, enabled, args.seconds, args.people, args.rooms)
        label = "presence on " if enabled else "presence off"
        print(
            f"{label}: {result['cpu_percent_of_one_core']:.1f}% of one core "
            f"({result['cpu_seconds']:.2f} s CPU in {args.seconds:.0f} s), "
            f"{result['state_changes']:.0f} state changes, "
            f"{result['frames_delivered']:.0f} presence frames delivered"
        )


async def snapshot_run(members: int, requests: int) -> list[float]:
    from storage import participants as pstore
    from tests.support import api_for, make_settings, start_server

    with tempfile.TemporaryDirectory() as tmp:
        async with start_server(make_settings(Path(tmp))) as running, api_for(running) as api:
            owner = await api.register("owner")
            ids = [f"p-bench-{n}" for n in range(members - 1)]

            def add_people(conn: object) -> None:
                for pid in ids:
                    pstore.create_participant_txn(
                        conn,  # type: ignore[arg-type]
                        participant_id=pid,
                        username=pid,
                        display_name=pid,
                        participant_type="human",
                        password_hash=None,
                        is_admin=False,
                        now_ms=1,
                    )

            await running.writer.write(add_people)
            body = {"name": "big", "initial_members": [{"type": "user", "id": i} for i in ids]}
            room = (await api.ok("POST", "/v1/rooms", owner, status=201, json=body))["id"]
            timings = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = await api.call("GET", f"/v1/rooms/{room}/state", owner)
                timings.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200
                assert len(r.json()["data"]["members"]) == members
            return timings


def snapshot_main(args: argparse.Namespace) -> None:
    timings = sorted(trio.run(snapshot_run, args.members, args.requests))
    p50 = statistics.median(timings)
    p99 = timings[int(len(timings) * 0.99) - 1]
    print(
        f"GET /v1/rooms/{{id}}/state, {args.members} members: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms over {args.requests} requests"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("presence")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--people", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=100)
    s = sub.add_parser("snapshot")
    s.add_argument("--members", type=int, default=1000)
    s.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    presence_main(args) if args.cmd == "presence" else snapshot_main(args)


if __name__ == "__main__":
    main()
