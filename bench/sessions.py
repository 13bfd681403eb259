"""Sessions bench (issue 10): server overhead to the first SSE byte, and concurrent streams.

Run by hand (bounded: each scenario has a deadline; the whole run takes well under a minute):

    .venv/bin/python bench/sessions.py first-byte --requests 300
    .venv/bin/python bench/sessions.py streams --streams 500 --words 200
    .venv/bin/python bench/sessions.py streams --streams 500 --words 100 --delay-ms 50
    .venv/bin/python bench/sessions.py all [--json bench/results/sessions.jsonl]
    .venv/bin/python bench/sessions.py sweep --sweep 100,200,300 --words 100 --delay-ms 50
    .venv/bin/python bench/sessions.py streams --repo /tmp/base --repo . --rounds 3  # A/B
    .venv/bin/python bench/sessions.py streams --profile /tmp/stacks.txt  # py-spy, collapsed

The server is ``homeserver serve --dev --port 0`` in a subprocess pinned to CPU 0 (taskset),
with ``dev/echo`` at ``--delay-ms`` (0 by default) and ``db_synchronous`` = ``--sync``; this
process (CPU 1) speaks raw HTTP/1.1 over trio sockets so the client adds as little as possible.

``first-byte``: sequential ``POST /v1/sessions/{id}/messages {stream: true}`` on fresh
connections, ten messages per session. The clock starts after connect, just before the
request is written, and stops at the first response byte (status line, headers and the
role chunk leave together) and at the first content delta. With dev/echo at 0 ms, all of
it is the server's own work: auth, one read, the user message's write, starting the
generation. ``GET /health`` timed the same way after each request is the HTTP stack's
own share (it differs from run to run with the machine's load).

``streams``: N sessions stream at once. Every stream is a reply of ``--words`` + 1 deltas.
Per stream, the gap between successive reads that carried content is recorded; the p99 gap
over all streams, minus the model's own pacing (``--delay-ms``), is the gap the server adds.
``steady_gap_ms`` counts only the gaps while all N streams were flowing at once (after the
last stream's first delta, before the first stream's last), i.e. without the start-up
burst of N requests (auth, reads, writes) that the whole-run figure includes. This
process's garbage collector is off while the streams are timed (a full collection of the
client showed as a gap in every stream at once).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"^homeserver listening on http://127\.0\.0\.1:(\d+)\s*$")
CONTENT = b'"delta":{"content":'
DONE = b"data: [DONE]"
TURNS = 10


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str], repo: Path = REPO) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
        full.update(PYTHONUNBUFFERED="1", HOMESERVER_LOG_LEVEL="warning", **env)
        cmd = [sys.executable, "-m", "homeserver.cli", "serve", "--dev", "--port", "0"]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        self.proc = subprocess.Popen(
            [*cmd, "--data-dir", str(data_dir)],
            cwd=repo,  # python -m imports the server's packages from here
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        self.port = 0
        while time.monotonic() < deadline and not self.port:
            match = LISTENING.match(self.proc.stdout.readline())
            self.port = int(match.group(1)) if match else 0
        if not self.port:
            self.stop()
            raise RuntimeError("the server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def setup(port: int, sessions: int) -> tuple[str, list[str]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        r = await c.post("/v1/auth/register", json={"username": "bench", "password": "x" * 12})
        token = r.json()["data"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        for _ in range(sessions):
            r = await c.post("/v1/sessions", headers=auth, json={"model": "dev/echo"})
            ids.append(r.json()["data"]["id"])
        return token, ids


def request(token: str, session_id: str, content: str) -> bytes:
    body = json.dumps({"content": content, "stream": True}).encode()
    head = (
        f"POST /v1/sessions/{session_id}/messages HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def one_reply(port: int, raw: bytes) -> dict[str, Any]:
    """Send one streamed request; the read times (perf_counter) and the whole response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        t0 = time.perf_counter()
        await stream.send_all(raw)
        first: float | None = None
        first_content: float | None = None
        content_reads: list[float] = []
        data = b""
        while True:
            part = await stream.receive_some(65536)
            now = time.perf_counter()
            if not part:
                break
            first = first or now
            data += part
            if CONTENT in part:
                content_reads.append(now)
                first_content = first_content or now
            if DONE in data[-64:]:
                break
    return {
        "t0": t0,
        "first": first,
        "first_content": first_content,
        "content_reads": content_reads,
        "chunks": data.count(CONTENT),
        "ok": data.startswith(b"HTTP/1.1 200") and DONE in data,
    }


async def health_first_byte(port: int) -> float:
    """ms to the first byte of ``GET /health`` on a fresh connection (the HTTP stack alone)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        t0 = time.perf_counter()
        await stream.send_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await stream.receive_some(65536)
        return (time.perf_counter() - t0) * 1000


async def first_byte(port: int, requests: int) -> dict[str, Any]:
    token, sids = await setup(port, (requests + 30) // TURNS + 1)
    firsts, contents, health = [], [], []
    with trio.fail_after(120):
        for i in range(requests + 30):
            sid = sids[i // TURNS]  # conversations of TURNS messages
            got = await one_reply(port, request(token, sid, f"ping {i}"))
            assert got["ok"], got
            baseline = await health_first_byte(port)
            if i >= 30:  # warm-up
                firsts.append((got["first"] - got["t0"]) * 1000)
                contents.append((got["first_content"] - got["t0"]) * 1000)
                health.append(baseline)
    return {
        "requests": requests,
        "first_byte_ms": {"p50": pct(firsts, 0.5), "p99": pct(firsts, 0.99)},
        "first_content_ms": {"p50": pct(contents, 0.5), "p99": pct(contents, 0.99)},
        "health_first_byte_ms": {"p50": pct(health, 0.5), "p99": pct(health, 0.99)},
        "load_average": os.getloadavg(),
    }


async def streams(port: int, n: int, words: int, delay_ms: int, server: Server) -> dict[str, Any]:
    token, ids = await setup(port, n)
    text = " ".join(f"w{i}" for i in range(words))
    raws = [request(token, sid, text) for sid in ids]
    results: list[dict[str, Any]] = []
    # The client's own garbage collector must not pause it while it times reads: a full
    # collection here (17 ms measured) would count as a gap in every stream at once.
    gc.collect()
    gc.disable()
    cpu0 = server.cpu_seconds()
    started = time.perf_counter()
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:

                async def run(raw: bytes) -> None:
                    results.append(await one_reply(port, raw))

                for raw in raws:
                    nursery.start_soon(run, raw)
    finally:
        gc.enable()
    wall = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu0
    gaps = [
        (b - a) * 1000
        for r in results
        for a, b in zip(r["content_reads"], r["content_reads"][1:], strict=False)
    ]
    chunks = sum(r["chunks"] for r in results)
    # Streams whose content overlapped in time: every stream had deltas flowing at once
    # when the latest first delta came before the earliest last delta.
    latest_first = max(r["content_reads"][0] for r in results)
    earliest_last = min(r["content_reads"][-1] for r in results)
    # The steady state: gaps wholly inside that window, when all N streams were flowing
    # (not while the others were still being started, nor while they were ending).
    steady = [
        (b - a) * 1000
        for r in results
        for a, b in zip(r["content_reads"], r["content_reads"][1:], strict=False)
        if a >= latest_first and b <= earliest_last
    ]
    return {
        "streams": n,
        "words": words,
        "delay_ms": delay_ms,
        "complete": sum(1 for r in results if r["ok"] and r["chunks"] == words + 1),
        "all_flowing_at_once": latest_first < earliest_last,
        "wall_s": wall,
        "server_cpu_s": cpu,
        "deltas_per_s": chunks / wall,
        "gap_ms": {"p50": pct(gaps, 0.5), "p99": pct(gaps, 0.99), "max": max(gaps or [0])},
        "gap_added_p99_ms": max(0.0, pct(gaps, 0.99) - delay_ms),
        "steady_s": max(0.0, earliest_last - latest_first),
        "steady_gaps": len(steady),
        "steady_gap_ms": {"p50": pct(steady, 0.5), "p99": pct(steady, 0.99)},
        "steady_gap_added_p99_ms": max(0.0, pct(steady, 0.99) - delay_ms),
        "first_content_p99_ms": pct(
            [(r["content_reads"][0] - r["t0"]) * 1000 for r in results], 0.99
        ),
        "server_cpu_us_per_delta": cpu / max(1, chunks) * 1e6,
        "load_average": os.getloadavg(),
    }


def _profiler(path: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (collapsed stacks, one line per stack: ``frames count``)."""
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
    proc = subprocess.Popen(
        [*cmd, "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # attached before the scenario starts
    return proc


def run_scenario(args: argparse.Namespace, name: str, delay_ms: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "HOMESERVER_MODELS_DEV_ECHO_DELAY_MS": str(delay_ms),
            "HOMESERVER_DB_SYNCHRONOUS": args.sync,
            "HOMESERVER_SESSIONS_MAX_GENERATIONS": str(max(1024, args.streams)),
            "HOMESERVER_SESSIONS_MAX_PER_PARTICIPANT": str(max(10000, args.streams)),
        }
        server = Server(Path(tmp) / "data", env, args.repo)
        spy = _profiler(args.profile, server.proc.pid) if args.profile else None
        try:
            if name == "first-byte":
                out = trio.run(first_byte, server.port, args.requests)
            else:
                out = trio.run(streams, server.port, args.streams, args.words, delay_ms, server)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            server.stop()
    out.update(scenario=name, sync=args.sync, date=time.strftime("%Y-%m-%d"), repo=str(args.repo))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["first-byte", "streams", "all", "sweep"])
    parser.add_argument("--sweep", default="100,200,300,500", help="stream counts for sweep")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--repo",
        type=Path,
        action="append",
        help="source tree(s) the server runs from (default: this one); several: A/B "
        "interleaved, each scenario run once per tree in turn, --rounds times",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the server")
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    plan = {
        "first-byte": [("first-byte", args.delay_ms)],
        "streams": [("streams", args.delay_ms)],
        "all": [("first-byte", 0), ("streams", 0), ("streams", 50)],
        "sweep": [("streams", args.delay_ms)],
    }[args.scenario]
    counts = [int(n) for n in args.sweep.split(",")] if args.scenario == "sweep" else [0]
    repos = args.repo or [REPO]
    for _ in range(args.rounds):
        for n in counts:
            for name, delay in plan:
                for repo in repos:
                    args.repo = repo
                    if args.scenario == "sweep":
                        args.streams = n
                    out = run_scenario(args, name, delay)
                    print(json.dumps(out, indent=1, default=str))
                    if args.json:
                        with args.json.open("a") as f:
                            f.write(json.dumps(out, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
