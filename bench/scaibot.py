"""Concurrent ScaiBot widget chats against dev/echo (issue 12). Run by hand:

    .venv/bin/python bench/scaibot.py --visitors 300 --seconds 20

Starts ``homeserver serve --dev --port 0`` as a subprocess pinned to CPU 0 (bench/loadgen.py's
``Server``), with the ScaiBot rate limits off and ``dev/echo`` streaming one word every
``--delay-ms`` (100 ms: about a real model's 10 tokens/s). One owner, one active bot, one
embed token per visitor. Each visitor (this process, pinned to CPU 1, raw trio sockets on a
keep-alive HTTP/1.1 connection) arrives at a random moment of the first answer's length, sends
``POST /chat`` with a ``--words``-word message, reads the SSE stream to ``done``, pauses a
random 0-2x ``--think-ms``, and sends the next: almost every visitor has a stream open at
every moment (``open_streams_*``). Measured per chat after ``--warmup`` seconds: the time from the
request's last byte to the ``start`` event (the server's overhead: the model has not been
called yet), and the time to ``done``. Server CPU comes from /proc/<pid>/stat. All traffic is
on 127.0.0.1; every loop has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Server

BASE = "/v1/modules/scaibot"


@dataclass
class Stats:
    to_start_ms: list[float] = field(default_factory=list)
    to_done_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    open_streams: int = 0
    open_samples: list[int] = field(default_factory=list)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """Time the server's threads spent runnable but waiting for a CPU (/proc schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


async def setup(port: int, visitors: int) -> tuple[str, list[str]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        r = await client.post(
            "/v1/auth/register", json={"username": "owner", "password": "password123"}
        )
        auth = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}
        r = await client.post(
            f"{BASE}/bots",
            headers=auth,
            json={"name": "Bench", "slug": "bench", "model": "dev/echo", "status": "active"},
        )
        bot_id = r.json()["data"]["id"]
        tokens = []
        for n in range(visitors):
            r = await client.post(
                f"{BASE}/bots/{bot_id}/embed-token",
                headers=auth,
                json={"ttl_seconds": 86400, "visitor_id": f"visitor-{n}"},
            )
            tokens.append(r.json()["data"]["token"])
        return bot_id, tokens


async def visitor(
    args: argparse.Namespace,
    port: int,
    bot_id: str,
    token: str,
    stats: Stats,
    measure_from: float,
    until: float,
) -> None:
    rng = random.Random(token)
    # Visitors arrive spread over one answer's length, so requests do not come in lockstep.
    await trio.sleep(rng.uniform(0, args.words * args.delay_ms / 1000))
    words = args.words
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    message = " ".join(f"word{i}" for i in range(words))
    conversation: str | None = None
    try:
        while time.monotonic() < until:
            body: dict[str, str] = {"bot_id": bot_id, "message": message}
            if conversation:
                body["conversation_id"] = conversation
            payload = orjson.dumps(body)
            head = (
                f"POST {BASE}/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            await stream.send_all(head + payload)
            sent = time.monotonic()
            buf = b""
            started = 0.0
            stats.open_streams += 1
            try:
                with trio.fail_after(120):
                    while not buf.endswith(b"\r\n0\r\n\r\n"):
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            raise ConnectionError("server closed the connection")
                        buf += chunk
                        if not started and b"event: start" in buf:
                            started = time.monotonic()
                            line = buf.split(b"event: start\ndata: ", 1)[1].split(b"\n", 1)[0]
                            conversation = orjson.loads(line)["conversation_id"]
                        if b" 429 " in buf[:20]:
                            break
            finally:
                stats.open_streams -= 1
            done = time.monotonic()
            status = buf[9:12].decode()
            if status != "200" or b"event: done" not in buf:
                key = status if status != "200" else "no-done"
                stats.errors[key] = stats.errors.get(key, 0) + 1
                if status != "200":
                    # Drain a JSON error body's rest is not needed: reconnect.
                    await stream.aclose()
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                continue
            if sent >= measure_from:
                stats.to_start_ms.append((started - sent) * 1000)
                stats.to_done_ms.append((done - sent) * 1000)
                stats.tokens += buf.count(b"event: token")
            await trio.sleep(rng.uniform(0, 2 * args.think_ms / 1000))
    finally:
        await stream.aclose()


async def sampler(stats: Stats, measure_from: float, until: float) -> None:
    while time.monotonic() < until:
        await trio.sleep(0.25)
        if time.monotonic() >= measure_from:
            stats.open_samples.append(stats.open_streams)


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        env = {
            "HOMESERVER_LOG_LEVEL": "warning",
            "HOMESERVER_DB_SYNCHRONOUS": args.sync,
            "HOMESERVER_MODELS_DEV_ECHO_DELAY_MS": str(args.delay_ms),
            "HOMESERVER_SCAIBOT_VISITOR_MESSAGES_PER_MINUTE": "0",
            "HOMESERVER_SCAIBOT_BOT_MESSAGES_PER_MINUTE": "0",
        }
        server = Server(data, env, cpu=args.server_cpu)
        server.start()
        try:
            bot_id, tokens = await setup(server.port, args.visitors)
            stats = Stats()
            t0 = time.monotonic()
            measure_from = t0 + args.warmup
            until = measure_from + args.seconds
            cpu_before = 0.0
            client_before = 0.0
            spy = None
            if args.profile:
                spy = subprocess.Popen(  # noqa: ASYNC220 - a bench-only profiler
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "-o",
                        args.profile,
                        "-p",
                        str(server.pid),
                        "-d",
                        str(int(args.warmup + args.seconds)),
                        "-f",
                        "raw",
                        "-r",
                        "200",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler, stats, measure_from, until)
                for token in tokens:
                    nursery.start_soon(
                        visitor, args, server.port, bot_id, token, stats, measure_from, until
                    )
                await trio.sleep_until(trio.current_time() + args.warmup)
                cpu_before = cpu_seconds(server.pid)
                client_before = time.process_time()
                wait_before = runqueue_wait_seconds(server.pid)
            cpu_used = cpu_seconds(server.pid) - cpu_before
            client_used = time.process_time() - client_before
            waited = runqueue_wait_seconds(server.pid) - wait_before
            if spy is not None:
                spy.wait(60)
            wall = time.monotonic() - measure_from
        finally:
            server.stop()
    chats = len(stats.to_start_ms)
    return {
        "bench": "scaibot",
        "visitors": args.visitors,
        "delay_ms": args.delay_ms,
        "words": args.words,
        "think_ms": args.think_ms,
        "sync": args.sync,
        "server_cpu": args.server_cpu,
        "seconds": round(wall, 1),
        "chats": chats,
        "chats_per_s": round(chats / wall, 1),
        "tokens_per_s": round(stats.tokens / wall, 1),
        "open_streams_median": statistics.median(stats.open_samples) if stats.open_samples else 0,
        "open_streams_min": min(stats.open_samples, default=0),
        "to_start_ms_p50": round(pct(stats.to_start_ms, 50), 2),
        "to_start_ms_p99": round(pct(stats.to_start_ms, 99), 2),
        "to_start_ms_max": round(max(stats.to_start_ms, default=float("nan")), 2),
        "to_done_ms_p50": round(pct(stats.to_done_ms, 50), 1),
        "to_done_ms_p99": round(pct(stats.to_done_ms, 99), 1),
        "server_cpu_percent": round(100 * cpu_used / wall, 1),
        "client_cpu_percent": round(100 * client_used / wall, 1),
        # Runnable but not running (other processes had the CPU), % of wall time.
        "server_runqueue_wait_percent": round(100 * waited / wall, 1),
        "errors": stats.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--think-ms", type=float, default=100.0, help="mean pause between chats")
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    parser.add_argument("--server-cpu", type=int, default=0, help="the generator takes the other")
    parser.add_argument("--profile", help="py-spy raw (collapsed) output file for the server")
    parser.add_argument("--json", type=Path, help="append the result as one JSON line")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1 - args.server_cpu})
    result = trio.run(run, args)
    print(json.dumps(result, indent=2))
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
