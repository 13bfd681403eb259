"""Three real ``homeserver serve`` processes on one database and one real Redis.

Issue 14's list, one test each: order across processes with no gap, ``?since=``
resume on another process, cross-process typing, presence (and ``GET
/presence`` agreeing everywhere), one rate limit, ``duplicate_connection``,
a Redis restart under load (caught up from the database), and ``kill -9`` of
one process under load (no acknowledged event lost, retries deduplicated, the
presence lead fails over, the dead node's users go offline). The processes are
started once for the module; the destructive tests run last.
"""

from __future__ import annotations

import itertools
import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from tests.cluster.engines import cluster_database
from tests.cluster.harness import Cluster, auth, frame, redis_server, register
from tests.engines import PgServer

pytestmark = pytest.mark.e2e

STEP = 15.0
RATE_LIMIT = 40
_names = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    with redis_server(tmp) as redis, cluster_database(tmp, pg_server) as (db_env, data_dir):
        nodes = Cluster(tmp, redis, db_env, data_dir)
        nodes.extra_env = {"HOMESERVER_RATE_LIMIT_MESSAGES": str(RATE_LIMIT)}
        try:
            nodes.start_all(3)
            yield nodes
        finally:
            nodes.stop()


def new_user(cluster: Cluster, node: int = 0) -> dict[str, Any]:
    return register(cluster.url(node), f"u{next(_names)}_{node}")


async def make_room(cluster: Cluster, owner: dict[str, Any], *members: dict[str, Any]) -> str:
    body = {
        "name": "cluster",
        "initial_members": [{"type": "user", "id": m["participant_id"]} for m in members],
    }
    async with httpx.AsyncClient(base_url=cluster.url(0), timeout=STEP) as client:
        r = await client.post("/v1/rooms", json=body, headers=auth(owner))
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


async def send(
    client: httpx.AsyncClient, user: dict[str, Any], room: str, body: str, uuid: str | None = None
) -> httpx.Response:
    payload: dict[str, Any] = {"content": {"msgtype": "swp.text", "body": body}}
    if uuid is not None:
        payload["event_uuid"] = uuid
    return await client.post(f"/v1/rooms/{room}/send", json=payload, headers=auth(user))


class Listener:
    """One stream client: every frame it got, by type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed: ConnectionClosed | None = None
        self._changed = trio.Event()

    async def pump(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(frame(message))
                self._changed.set()
        except ConnectionClosed as exc:
            self.closed = exc
        self._changed.set()

    def messages(self, room: str) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("type") == "swp.room.message" and f.get("room_id") == room
        ]

    def positions(self, room: str) -> list[int]:
        return [int(f["stream_position"]) for f in self.messages(room)]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    async def until(self, predicate: Any, within: float = STEP) -> None:
        with trio.move_on_after(within):
            while not predicate():
                self._changed = trio.Event()
                if self.closed is not None and not predicate():
                    raise AssertionError(f"stream closed: {self.closed}")
                await self._changed.wait()
        if not predicate():
            summary = [(f.get("type"), f.get("stream_position")) for f in self.frames]
            raise AssertionError(f"not within {within} s; frames: {summary}")


@asynccontextmanager
async def listen(
    cluster: Cluster, node: int, user: dict[str, Any], since: int | None = None
) -> AsyncIterator[Listener]:
    url = f"{cluster.ws(node)}?token={user['access_token']}"
    if since is not None:
        url += f"&since={since}"
    async with (
        connect(url, open_timeout=STEP, close_timeout=2, max_size=None, proxy=None) as ws,
        trio.open_nursery() as nursery,
    ):
        listener = Listener(ws)
        nursery.start_soon(listener.pump)
        await listener.until(lambda: bool(listener.of("hello")))
        yield listener
        nursery.cancel_scope.cancel()


def consecutive(positions: list[int]) -> bool:
    return positions == list(range(positions[0], positions[0] + len(positions)))


# --------------------------------------------------------------------------- order


async def test_clients_on_different_processes_see_one_order_with_no_gap(cluster: Cluster) -> None:
    users = [new_user(cluster, i) for i in range(3)]
    room = await make_room(cluster, users[0], users[1], users[2])
    per_user = 15
    async with (
        listen(cluster, 0, users[0]) as l0,
        listen(cluster, 1, users[1]) as l1,
        listen(cluster, 2, users[2]) as l2,
    ):

        async def sender(i: int) -> None:
            async with httpx.AsyncClient(base_url=cluster.url(i), timeout=STEP) as client:
                for k in range(per_user):
                    r = await send(client, users[i], room, f"{i}-{k}")
                    assert r.status_code == 200, r.text

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(sender, i)
        for listener in (l0, l1, l2):
            await listener.until(lambda li=listener: len(li.messages(room)) >= 3 * per_user)
    seen = [li.positions(room) for li in (l0, l1, l2)]
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0]) == 3 * per_user
    assert consecutive(seen[0])


async def test_since_resumes_on_another_process(cluster: Cluster) -> None:
    a, b = new_user(cluster, 0), new_user(cluster, 1)
    room = await make_room(cluster, a, b)
    async with (
        httpx.AsyncClient(base_url=cluster.url(1), timeout=STEP) as on1,
        httpx.AsyncClient(base_url=cluster.url(2), timeout=STEP) as on2,
    ):
        async with listen(cluster, 0, a) as first:
            for k in range(5):
                assert (await send(on1, b, room, f"first {k}")).status_code == 200
            await first.until(lambda: len(first.messages(room)) == 5)
        resume_at = first.positions(room)[-1]
        for k in range(5):
            assert (await send(on2, b, room, f"offline {k}")).status_code == 200
        async with listen(cluster, 2, a, since=resume_at) as second:
            await second.until(lambda: len(second.messages(room)) == 5)
            for k in range(3):
                assert (await send(on1, b, room, f"live {k}")).status_code == 200
            await second.until(lambda: len(second.messages(room)) == 8)
    bodies = [m["content"]["body"] for m in first.messages(room) + second.messages(room)]
    assert bodies == [f"first {k}" for k in range(5)] + [f"offline {k}" for k in range(5)] + [
        f"live {k}" for k in range(3)
    ]
    assert consecutive(first.positions(room) + second.positions(room))


# --------------------------------------------------------------------------- ephemeral


async def test_typing_and_presence_cross_processes(cluster: Cluster) -> None:
    a, c = new_user(cluster, 0), new_user(cluster, 2)
    room = await make_room(cluster, a, c)
    async with listen(cluster, 2, c) as on_c:
        async with listen(cluster, 0, a):
            await on_c.until(
                lambda: any(
                    p["participant_id"] == a["participant_id"] and p["status"] == "online"
                    for p in on_c.of("presence")
                )
            )
            async with httpx.AsyncClient(base_url=cluster.url(0), timeout=STEP) as on0:
                r = await on0.put(
                    "/v1/typing", json={"room_id": room, "typing": True}, headers=auth(a)
                )
                assert r.status_code == 200, r.text
            await on_c.until(
                lambda: any(t["participant_id"] == a["participant_id"] for t in on_c.of("typing"))
            )
            assert on_c.of("typing")[0]["typing"] is True
            for node in range(3):
                assert await presence_of(cluster, node, c, a) == "online"
        await on_c.until(
            lambda: any(
                p["participant_id"] == a["participant_id"] and p["status"] == "offline"
                for p in on_c.of("presence")
            )
        )
        for node in range(3):
            assert await presence_of(cluster, node, c, a) == "offline"


async def presence_of(
    cluster: Cluster, node: int, viewer: dict[str, Any], target: dict[str, Any]
) -> str:
    async with httpx.AsyncClient(base_url=cluster.url(node), timeout=STEP) as client:
        with trio.fail_after(STEP):
            r = await client.get(
                "/v1/presence", params={"ids": target["participant_id"]}, headers=auth(viewer)
            )
    assert r.status_code == 200, r.text
    return str(r.json()["data"][target["participant_id"]])


async def test_duplicate_connection_across_processes(cluster: Cluster) -> None:
    a = new_user(cluster, 0)
    async with listen(cluster, 0, a) as older, listen(cluster, 2, a) as newer:
        await older.until(lambda: older.closed is not None)
        assert older.closed is not None
        assert older.closed.rcvd is not None
        assert (older.closed.rcvd.code, older.closed.rcvd.reason) == (
            4003,
            "duplicate_connection",
        )
        assert newer.closed is None


async def test_one_rate_limit_across_processes(cluster: Cluster) -> None:
    a, b = new_user(cluster, 0), new_user(cluster, 1)
    room = await make_room(cluster, a, b)
    elsewhere = await make_room(cluster, b)  # a is no member: refused after the limit
    clients = [httpx.AsyncClient(base_url=cluster.url(i), timeout=STEP) for i in range(3)]
    codes: list[int] = []
    try:
        for i in range(3):  # each refusal gives its slot back, on every process
            assert (await send(clients[i], a, elsewhere, "no")).status_code == 403

        async def spread(i: int) -> None:
            for k in range(RATE_LIMIT // 3 + 4):
                r = await send(clients[i], a, room, f"rl {i} {k}")
                codes.append(r.status_code)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(spread, i)
    finally:
        for client in clients:
            await client.aclose()
    assert codes.count(200) == RATE_LIMIT
    assert codes.count(429) == len(codes) - RATE_LIMIT


async def test_same_event_uuid_on_two_processes_makes_one_event(cluster: Cluster) -> None:
    a = new_user(cluster, 0)
    room = await make_room(cluster, a)
    results: dict[tuple[int, int], str] = {}
    async with (
        httpx.AsyncClient(base_url=cluster.url(0), timeout=STEP) as on0,
        httpx.AsyncClient(base_url=cluster.url(1), timeout=STEP) as on1,
    ):

        async def twin(k: int, node: int, client: httpx.AsyncClient) -> None:
            r = await send(client, a, room, f"twin {k}", uuid=f"twin-{k}")
            assert r.status_code == 200, r.text
            results[(k, node)] = r.json()["data"]["id"]

        async with trio.open_nursery() as nursery:
            for k in range(10):
                nursery.start_soon(twin, k, 0, on0)
                nursery.start_soon(twin, k, 1, on1)
        r = await on1.get(f"/v1/rooms/{room}/messages", params={"limit": 50}, headers=auth(a))
    assert all(results[(k, 0)] == results[(k, 1)] for k in range(10))
    items = r.json()["data"]["items"]
    bodies = [e["content"].get("body") for e in items if e["type"] == "swp.room.message"]
    assert sorted(bodies) == sorted(f"twin {k}" for k in range(10))


async def test_an_ai_made_on_one_process_answers_once_through_another(cluster: Cluster) -> None:
    a = new_user(cluster, 0)
    async with (
        httpx.AsyncClient(base_url=cluster.url(0), timeout=STEP) as on0,
        httpx.AsyncClient(base_url=cluster.url(1), timeout=STEP) as on1,
    ):
        r = await on0.post(
            "/v1/ai/participants",
            json={"name": "helper", "type": "bot", "model": "dev/echo"},
            headers=auth(a),
        )
        assert r.status_code == 201, r.text
        ai = r.json()["data"]["id"]
        await trio.sleep(0.5)  # the announcement reaches the other processes
        body = {"name": "ai room", "initial_members": [{"type": "bot", "id": ai}]}
        r = await on0.post("/v1/rooms", json=body, headers=auth(a))
        assert r.status_code == 201, r.text
        room = r.json()["data"]["id"]
        async with listen(cluster, 2, a) as watcher:
            r = await on1.post(
                f"/v1/rooms/{room}/messages",
                json={"content": "hello", "mention": [{"type": "bot", "id": ai}]},
                headers=auth(a),
            )
            assert r.status_code == 201, r.text
            await watcher.until(lambda: any(m["sender_id"] == ai for m in watcher.messages(room)))
            await trio.sleep(1.0)  # a second answer from another process would be here by now
        answers = [m for m in watcher.messages(room) if m["sender_id"] == ai]
    assert len(answers) == 1, answers
    assert answers[0]["content"]["body"].endswith("hello")


# --------------------------------------------------------------------------- failures


async def test_redis_restart_under_load_loses_nothing(cluster: Cluster) -> None:
    users = [new_user(cluster, i) for i in range(3)]
    room = await make_room(cluster, users[0], users[1], users[2])
    sent: list[str] = []
    async with listen(cluster, 2, users[2]) as watcher:

        async def load(i: int, count: int) -> None:
            async with httpx.AsyncClient(base_url=cluster.url(i), timeout=STEP) as client:
                for k in range(count):
                    r = await send(client, users[i], room, f"load {i} {k}")
                    assert r.status_code == 200, r.text
                    sent.append(f"load {i} {k}")
                    await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, 0, 30)
            nursery.start_soon(load, 1, 30)
            await trio.sleep(0.2)
            cluster.redis.stop()
            await trio.sleep(1.0)
            cluster.redis.start()
        await watcher.until(lambda: len(watcher.messages(room)) == len(sent), within=20)
    bodies = [m["content"]["body"] for m in watcher.messages(room)]
    assert sorted(bodies) == sorted(sent)
    assert consecutive(watcher.positions(room))


async def test_kill_minus_9_loses_no_acknowledged_event(cluster: Cluster) -> None:
    users = [new_user(cluster, i) for i in range(3)]
    room = await make_room(cluster, users[0], users[1], users[2])
    leader = await leader_index(cluster)
    victim = leader if leader is not None else 1
    survivors = [i for i in range(3) if i != victim]
    acked: dict[str, int] = {}
    async with (
        listen(cluster, survivors[0], users[survivors[0]]) as watcher,
        listen(cluster, victim, users[victim]),
    ):
        await watcher.until(lambda: is_status(watcher, users[victim], "online"))

        async def load(i: int) -> None:
            targets = itertools.cycle([i, *survivors] if i == victim else [i])
            node = next(targets)
            client = httpx.AsyncClient(base_url=cluster.url(node), timeout=3)
            try:
                for k in range(25):
                    uuid = f"kill-{i}-{k}"
                    while True:
                        try:
                            r = await send(client, users[i], room, uuid, uuid=uuid)
                        except httpx.TransportError:
                            r = None
                        if r is not None and r.status_code == 200:
                            acked[uuid] = int(r.json()["data"]["stream_position"])
                            break
                        # The node died: retry the same event_uuid on a survivor.
                        await client.aclose()
                        node = survivors[0]
                        client = httpx.AsyncClient(base_url=cluster.url(node), timeout=3)
                    await trio.sleep(0.01)
            finally:
                await client.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(load, i)
            await trio.sleep(0.3)
            cluster.nodes[victim].proc.send_signal(signal.SIGKILL)
        await watcher.until(lambda: len(set(watcher.positions(room))) >= len(acked), within=20)
        # The dead node's user goes offline for the others; the lead moves.
        await watcher.until(lambda: is_status(watcher, users[victim], "offline"), within=20)
    assert len(acked) == 75
    got = watcher.messages(room)
    bodies = [m["content"]["body"] for m in got]
    assert sorted(bodies) == sorted(acked)  # every acknowledged event exactly once
    assert {m["content"]["body"]: m["stream_position"] for m in got} == acked
    assert consecutive(watcher.positions(room))
    with trio.fail_after(STEP):
        while await leader_index(cluster, among=survivors) is None:  # noqa: ASYNC110 (polls HTTP)
            await trio.sleep(0.2)
    cluster.start(victim).wait_ready()


def is_status(listener: Listener, user: dict[str, Any], status: str) -> bool:
    mine = [p for p in listener.of("presence") if p["participant_id"] == user["participant_id"]]
    return bool(mine) and mine[-1]["status"] == status


async def leader_index(cluster: Cluster, among: list[int] | None = None) -> int | None:
    for i in among if among is not None else range(3):
        async with httpx.AsyncClient(base_url=cluster.url(i), timeout=STEP) as client:
            text = (await client.get("/metrics")).text
        if re.search(r"^homeserver_cluster_leader 1(\.0)?$", text, re.M):
            return i
    return None
