"""Cluster mode under load: 1, 2 and 3 ``homeserver serve`` processes on one
PostgreSQL and one Redis (issue 14). Run by hand; not part of the test suite.

Method
------
- PostgreSQL (tests/engines.py: ``initdb`` in a temp dir, ``fsync=off``, as a
  non-root user) and ``redis-server`` (no persistence) are started here, once.
  One database is migrated and kept for every process count, so the users and
  the room are made once (registration hashes a password with argon2id).
- For each process count N the servers start fresh, node i pinned to CPU
  ``i % nproc`` with ``taskset`` (when present); the generator is not pinned.
- ``acked``: S senders, sender j on node ``j % N``, each on its own stream,
  sends ``send`` frames one at a time for ``--seconds`` and waits for each
  ``ack``. At the same time L listeners (members of the same room, listener k
  on node ``k % N``) count every message frame: deliveries/s. Every listener
  checks that positions arrive strictly increasing with no gap.
- ``bus cost``: the same load with every sender on node 0 and no listeners;
  the CPU the *other* processes spend per event is what receiving one event
  over the bus costs (decode, hub), and node 0's CPU per event against N = 1
  is what publishing adds.
- CPU is utime + stime from /proc for each server process over the window.

    .venv/bin/python bench/cluster.py --nodes 1 2 3 --json bench/results/cluster.jsonl

Rate limits are off for the run (``HOMESERVER_RATE_LIMIT_MESSAGES=0``).
On a 2-core box shared with PostgreSQL, Redis and the generator, the figures
are for the shape of the curve, not absolutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from websockets.trio.client import ClientConnection, connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.harness import RedisServer  # noqa: E402
from tests.engines import TEMPLATE, PgServer, start_pg  # noqa: E402
from tests.serverproc import SERVE, clean_env  # noqa: E402

LISTENING = re.compile(r"^homeserver listening on (http://[\d.]+:\d+)\s*$")
PASSWORD = "correct horse battery"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Node:
    def __init__(self, index: int, env: dict[str, str], data_dir: Path, log: Path) -> None:
        cmd = [*SERVE, "--data-dir", str(data_dir)]
        if shutil.which("taskset") and os.cpu_count():
            cmd = ["taskset", "-c", str(index % (os.cpu_count() or 1)), *cmd]
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.base_url = ""
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = LISTENING.match(line)
                if match and not self.base_url:
                    self.base_url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(60)
        if not self.base_url:
            raise SystemExit(f"node {index} did not start; see {log}")

    @property
    def ws(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/stream"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@dataclass
class Tally:
    acks: int = 0
    deliveries: int = 0
    order_violations: int = 0
    gaps: int = 0
    latencies: list[float] = field(default_factory=list)


async def open_ws(stack: AsyncExitStack, url: str, token: str) -> ClientConnection:
    return await stack.enter_async_context(
        connect(
            f"{url}?token={token}",
            open_timeout=30,
            close_timeout=1,
            max_size=None,
            ping_interval=None,
            proxy=None,
        )
    )


async def sender(ws: ClientConnection, room: str, until: float, tally: Tally, tag: str) -> None:
    for n in itertools.count():
        if trio.current_time() >= until:
            return
        started = time.perf_counter()
        await ws.send(
            orjson.dumps(
                {
                    "type": "send",
                    "req_id": f"{tag}-{n}",
                    "room_id": room,
                    "content": {"msgtype": "swp.text", "body": f"{tag} {n}"},
                }
            ).decode()
        )
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == "ack":
                break
            if frame.get("type") == "error":
                raise SystemExit(f"send refused: {frame}")
        tally.acks += 1
        tally.latencies.append(time.perf_counter() - started)


async def listener(ws: ClientConnection, room: str, tally: Tally) -> None:
    last = None
    async for message in ws:
        frame = orjson.loads(message)
        if frame.get("type") != "swp.room.message" or frame.get("room_id") != room:
            continue
        position = int(frame["stream_position"])
        if last is not None:
            if position <= last:
                tally.order_violations += 1
            elif position != last + 1:
                tally.gaps += 1
        last = position
        tally.deliveries += 1


async def run_load(
    nodes: Sequence[Node],
    users: Sequence[dict[str, Any]],
    room: str,
    *,
    senders: int,
    listeners: int,
    seconds: float,
    all_on_first: bool,
) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        tally = Tally()
        n = len(nodes)
        send_users, listen_users = users[:senders], users[senders : senders + listeners]
        send_ws = [
            await open_ws(stack, nodes[0 if all_on_first else j % n].ws, u["access_token"])
            for j, u in enumerate(send_users)
        ]
        listen_ws = [
            await open_ws(stack, nodes[k % n].ws, u["access_token"])
            for k, u in enumerate(listen_users)
        ]
        print(f"  {n} node(s): {len(send_ws)} senders, {len(listen_ws)} listeners", file=sys.stderr)
        await trio.sleep(1.0)  # hellos, presence settle
        cpu_before = [cpu_seconds(node.proc.pid) for node in nodes]
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for ws in listen_ws:
                nursery.start_soon(listener, ws, room, tally)
            until = trio.current_time() + seconds
            async with trio.open_nursery() as senders_nursery:
                for j, ws in enumerate(send_ws):
                    senders_nursery.start_soon(sender, ws, room, until, tally, f"s{j}")
            expected = tally.acks * len(listen_ws)
            print(f"  {tally.acks} acked; waiting for deliveries", file=sys.stderr)
            with trio.move_on_after(10):
                while tally.deliveries < expected:  # noqa: ASYNC110 (counters, no event)
                    await trio.sleep(0.01)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        cpu = [cpu_seconds(node.proc.pid) - b for node, b in zip(nodes, cpu_before, strict=True)]
        async with trio.open_nursery() as closing:  # all at once: each may wait close_timeout
            for ws in [*send_ws, *listen_ws]:
                closing.start_soon(ws.aclose)
        lat = sorted(tally.latencies)
        events = max(1, tally.acks)
        return {
            "nodes": n,
            "senders": senders,
            "listeners": listeners,
            "all_senders_on_node0": all_on_first,
            "seconds": round(elapsed, 2),
            "acked_per_s": round(tally.acks / seconds, 1),
            "deliveries_per_s": round(tally.deliveries / elapsed, 1),
            "deliveries_missing": expected - tally.deliveries,
            "order_violations": tally.order_violations,
            "gaps": tally.gaps,
            "ack_p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
            "ack_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
            "cpu_s_per_node": [round(c, 2) for c in cpu],
            "cpu_us_per_event_per_node": [round(c / events * 1e6, 1) for c in cpu],
        }


def register_all(base_url: str, count: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(count):
            r = client.post(
                "/v1/auth/register",
                json={"username": f"bench{i}_{os.getpid()}", "password": PASSWORD},
            )
            r.raise_for_status()
            out.append(r.json()["data"])
    return out


def make_room(base_url: str, owner: dict[str, Any], members: Sequence[dict[str, Any]]) -> str:
    body = {
        "name": "bench",
        "initial_members": [{"type": "user", "id": m["participant_id"]} for m in members],
    }
    r = httpx.post(
        f"{base_url}/v1/rooms",
        json=body,
        headers={"Authorization": f"Bearer {owner['access_token']}"},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["data"]["id"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--senders", type=int, default=12)
    parser.add_argument("--listeners", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"hs-bench-cluster-{os.getpid()}"
    work.mkdir(parents=True)
    pg = start_pg()
    if isinstance(pg, str):
        raise SystemExit(pg)
    assert isinstance(pg, PgServer)
    redis = RedisServer(work / "redis.log")
    redis.start()
    results: list[dict[str, Any]] = []
    try:
        from tests.engines import _migrate_template

        _migrate_template(pg)
        pg.admin(f"CREATE DATABASE hs_bench TEMPLATE {TEMPLATE}")
        users: list[dict[str, Any]] = []
        room = ""
        for count in args.nodes:
            nodes: list[Node] = []
            try:
                for i in range(count):
                    env = {
                        "HOMESERVER_CLUSTER_DATABASE_URL": pg.url("hs_bench"),
                        "HOMESERVER_CLUSTER_BUS_URL": redis.url,
                        "HOMESERVER_CLUSTER_NODE_ID": f"node{i}",
                        "HOMESERVER_RATE_LIMIT_MESSAGES": "0",
                        "HOMESERVER_LOG_LEVEL": "warning",
                        "HOMESERVER_KNOWLEDGE_ENABLED": "false",
                    }
                    data_dir = work / "data"
                    data_dir.mkdir(exist_ok=True)
                    nodes.append(Node(i, env, data_dir, work / f"node{i}.log"))
                if not users:
                    users = register_all(nodes[0].base_url, args.senders + args.listeners)
                    room = make_room(nodes[0].base_url, users[0], users[1:])
                for all_on_first, listeners in ((False, args.listeners), (True, 0)):
                    if all_on_first and count == 1:
                        continue
                    result = trio.run(
                        partial(
                            run_load,
                            nodes,
                            users,
                            room,
                            senders=args.senders,
                            listeners=listeners,
                            seconds=args.seconds,
                            all_on_first=all_on_first,
                        )
                    )
                    result["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    print(json.dumps(result), flush=True)
                    results.append(result)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as out:
            for result in results:
                out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
