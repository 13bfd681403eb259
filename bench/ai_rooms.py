"""AI rooms benchmark (issue 11; run by hand, not part of the test suite).

Reuses bench/loadgen.py's method: the server is a subprocess (``homeserver serve --dev``)
pinned to CPU 0 on a fresh data dir, this generator is pinned to CPU 1, participants are
seeded through the admin CLI with one API key each, and every stream client is loadgen's
raw asyncio WebSocket client. The AI participants use the built-in ``dev/echo`` model
(``HOMESERVER_MODELS_DEV_ECHO_DELAY_MS`` apart per word) and
``HOMESERVER_AI_CHUNK_INTERVAL_MS`` coalescing, so one chunk carries
interval / delay words (20 by default: 5 ms and 100 ms).

Scenarios::

    fanout  --listeners 200   the server CPU one chunk delivery costs, next to one normal
                              event delivery: normal messages at 5 x --rate per second, or
                              --fanout-ais AIs answering one message at once, over and over;
                              each load runs once with 1 listener and once with N; the
                              marginal cost per delivery is
                              (CPU per frame at N - CPU per frame at 1) / (N - 1)
    p99     --listeners 200 --ais 50 --rate 20
                              send -> deliver latency of normal messages in a room of N
                              listeners, alone and while AIS AIs stream answers at once in a
                              second room (same listeners, or --ai-listeners of them)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen as lg

PROMPT_WORDS = [400]  # each answer is "echo: <name>: " + the prompt (--prompt-words)


class AiClient(lg.Client):
    """loadgen's client; the asker also counts ended drafts per room and chunk words."""

    asker = False
    ends: dict[str, int]
    wake: asyncio.Event
    chunk_words: list[int]

    def _on_json(self, obj: dict[str, Any], now: int) -> None:
        kind = obj.get("type")
        if self.asker and kind == "swp.ai.status":
            if obj.get("status") in ("done", "cancelled", "error"):
                if obj["status"] != "done":
                    self.run.errors.append(orjson.dumps(obj).decode()[:200])
                room = str(obj.get("room_id"))
                self.ends[room] = self.ends.get(room, 0) + 1
                self.wake.set()
        elif self.asker and kind == "swp.room.message.chunk":
            self.chunk_words.append(len(str(obj.get("delta", "")).split()))
        super()._on_json(obj, now)

    def send_json(self, payload: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(lg.client_frame(0x1, orjson.dumps(payload)))


async def open_ai_clients(
    run: lg.Run, port: int, keys: Sequence[str], askers: int = 2
) -> list[AiClient]:
    loop = asyncio.get_running_loop()

    async def one(index: int, key: str) -> AiClient:
        def make() -> AiClient:
            c = AiClient(run, index, key, port)
            c.asker, c.ends, c.wake, c.chunk_words = index < askers, {}, asyncio.Event(), []
            return c

        _, client = await loop.create_connection(make, lg.HOST, port)
        await asyncio.wait_for(client.hello, 30)
        return client

    return list(await asyncio.gather(*(one(i, k) for i, k in enumerate(keys))))


class Env:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="ai-bench-"))
        data = self.tmp / "data"
        self.users = lg.seed_users(data, opts.listeners)
        env = {
            "HOMESERVER_RATE_LIMIT_MESSAGES": "0",
            "HOMESERVER_LOG_LEVEL": "warning",
            "HOMESERVER_DB_SYNCHRONOUS": "normal",
            "HOMESERVER_MODELS_DEV_ECHO_DELAY_MS": str(opts.delay_ms),
            "HOMESERVER_AI_CHUNK_INTERVAL_MS": str(opts.interval_ms),
            "HOMESERVER_AI_RATE_LIMIT": "0",
            "HOMESERVER_AI_MAX_CONCURRENT_GENERATIONS": "256",
        }
        self.server = lg.Server(data, env, cpu=0)
        self.server.start()
        self.counter = itertools.count()

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = lg.http_json(self.server.port, method, path, self.users[0].key, body)
        return answer["data"]

    def ais(self, n: int) -> list[str]:
        return [
            self.http(
                "POST",
                "/v1/ai/participants",
                {"name": f"ai{i}", "type": "bot", "model": "dev/echo"},
            )["id"]
            for i in range(n)
        ]

    def room(self, users: Sequence[lg.User], ais: Sequence[str]) -> str:
        members = [{"type": "user", "id": u.participant_id} for u in users[1:]]
        members += [{"type": "bot", "id": a} for a in ais]
        return str(self.http("POST", "/v1/rooms", {"name": "r", "initial_members": members})["id"])

    def close(self) -> None:
        self.server.stop()


def cpu_seconds(pid: int) -> float:
    return lg.proc_cpu_seconds(pid)


async def ask(asker: AiClient, room: str, ais: Sequence[str], counter: Any) -> None:
    """One human message mentioning every AI in ``ais``; returns when all have ended."""
    target = asker.ends.get(room, 0) + len(ais)
    asker.send_json(
        {
            "type": "send",
            "req_id": f"ask-{next(counter)}",
            "room_id": room,
            "content": {
                "msgtype": "swp.text",
                "body": " ".join(["word"] * PROMPT_WORDS[0]),
                "mentions": list(ais),
            },
        }
    )
    while asker.ends.get(room, 0) < target:
        asker.wake.clear()
        await asyncio.wait_for(asker.wake.wait(), 60)


async def normal_load(sender: AiClient, run: lg.Run, rate: float, seconds: float) -> None:
    start = time.monotonic()
    for k in itertools.count():
        due = start + k / rate
        if due >= start + seconds:
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        sender.send_message(run.next_g)
        run.next_g += 1


async def ai_load(asker: AiClient, room: str, ais: Sequence[str], seconds: float, c: Any) -> int:
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        try:
            await ask(asker, room, ais, c)
        except TimeoutError:
            asker.run.errors.append(f"answers not all ended within 60 s (round {rounds})")
            return rounds
        rounds += 1
    return rounds


async def fanout(env: Env) -> dict[str, Any]:
    opts = env.opts
    ais = env.ais(opts.fanout_ais)
    room = env.room(env.users, ais)
    out: dict[str, Any] = {}
    for kind in ("normal", "chunk"):
        for n in (1, opts.listeners):
            run = lg.Run(room)
            clients = await open_ai_clients(run, env.server.port, [u.key for u in env.users[:n]])
            await asyncio.sleep(0.5)
            pid = env.server.pid
            c0, d0, e0 = cpu_seconds(pid), run.deliveries, dict(run.ephemeral)
            t0 = time.monotonic()
            if kind == "normal":
                await normal_load(clients[0], run, opts.rate * 5, opts.seconds)
                await lg._until(lambda: run.deliveries >= run.sent * n, 15)  # noqa: B023
            else:
                await ai_load(clients[0], room, ais, opts.seconds, env.counter)
            elapsed = time.monotonic() - t0
            c1 = cpu_seconds(pid)
            if kind == "normal":
                deliveries = run.deliveries - d0
            else:
                key = "swp.room.message.chunk"
                deliveries = run.ephemeral.get(key, 0) - e0.get(key, 0)
            frames = deliveries / n
            out[f"{kind}_{n}"] = {
                "listeners": n,
                "seconds": round(elapsed, 2),
                "frames": round(frames),
                "deliveries": deliveries,
                "server_cpu_s": round(c1 - c0, 3),
                "cpu_us_per_frame": round((c1 - c0) / max(frames, 1) * 1e6, 1),
                "words_per_chunk": (
                    round(sum(clients[0].chunk_words) / len(clients[0].chunk_words), 1)
                    if clients[0].chunk_words
                    else None
                ),
                "load_average_1m": os.getloadavg()[0],
                "errors": run.errors[:3],
            }
            await lg.close_clients(run, clients)
    n = opts.listeners
    for kind in ("normal", "chunk"):
        one, many = out[f"{kind}_1"], out[f"{kind}_{n}"]
        marginal = (many["cpu_us_per_frame"] - one["cpu_us_per_frame"]) / (n - 1)
        out[f"{kind}_us_per_delivery"] = round(marginal, 2)
    return out


async def p99(env: Env) -> dict[str, Any]:
    opts = env.opts
    ais = env.ais(opts.ais)
    plain = env.room(env.users, [])
    ai_members = env.users[: opts.ai_listeners or opts.listeners]
    ai_room = env.room(ai_members, ais)
    out: dict[str, Any] = {}
    for phase in ("alone", "with_ais"):
        run = lg.Run(plain)
        clients = await open_ai_clients(run, env.server.port, [u.key for u in env.users])
        await asyncio.sleep(0.5)
        pid = env.server.pid
        s0 = lg.CpuSample.take(pid)
        t0 = time.monotonic_ns()
        run.lat_lo, run.lat_hi = t0, t0 + int(opts.seconds * 1e9)
        chunk0 = run.ephemeral.get("swp.room.message.chunk", 0)
        loads: list[Coroutine[Any, Any, Any]] = [
            normal_load(clients[0], run, opts.rate, opts.seconds)
        ]
        if phase == "with_ais":
            loads.append(ai_load(clients[1], ai_room, ais, opts.seconds, env.counter))
        prof = lg.Profiler(opts.profile if phase == "with_ais" else None, pid, opts.seconds)
        results = await asyncio.gather(*loads)
        prof.finish()
        await lg._until(lambda: run.deliveries >= run.sent * len(clients), 15)  # noqa: B023
        elapsed = (time.monotonic_ns() - t0) / 1e9
        cpu = lg.cpu_percent(s0, lg.CpuSample.take(pid))
        chunks = run.ephemeral.get("swp.room.message.chunk", 0) - chunk0
        words = clients[1].chunk_words
        out[phase] = {
            "listeners": len(clients),
            "normal_rate": opts.rate,
            "send_to_deliver": lg.latency_summary(run.lat),
            "ais_streaming": opts.ais if phase == "with_ais" else 0,
            "ai_rounds": results[1] if len(results) > 1 else 0,
            "chunk_deliveries_per_s": round(chunks / elapsed),
            "words_per_chunk": round(sum(words) / len(words), 1) if words else None,
            **cpu,
            "dropped_connections": run.dropped,
            "load_average_1m": os.getloadavg()[0],
            "errors": run.errors[:3],
        }
        words.clear()
        await lg.close_clients(run, clients)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scenario", choices=["fanout", "p99"])
    p.add_argument("--listeners", type=int, default=200)
    p.add_argument("--ais", type=int, default=50)
    p.add_argument("--fanout-ais", type=int, default=10, help="AIs answering at once (fanout)")
    p.add_argument("--ai-listeners", type=int, default=0, help="members of the AI room")
    p.add_argument("--rate", type=float, default=20.0, help="normal messages per second")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--delay-ms", type=int, default=5, help="dev/echo delay per word")
    p.add_argument("--interval-ms", type=int, default=100, help="ai.chunk_interval_ms")
    p.add_argument("--json", type=Path, help="append the result here")
    p.add_argument("--profile", help="p99: py-spy raw profile of the server while AIs stream")
    p.add_argument("--prompt-words", type=int, default=400, help="words per answer")
    opts = p.parse_args(argv)
    PROMPT_WORDS[0] = opts.prompt_words
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    env = Env(opts)
    try:
        run = fanout if opts.scenario == "fanout" else p99
        result = {"scenario": opts.scenario, "options": vars(opts) | {"json": None}}
        result |= asyncio.run(run(env))
    finally:
        env.close()
    text = json.dumps(result, default=str)
    print(text)
    if opts.json:
        with opts.json.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
