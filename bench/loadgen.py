"""Load generator for the ScaiWave homeserver (run by hand; not part of the test suite).

Method (after reference/stack-measurements.md, section 4):

- The server runs as its own process, started here on a fresh temporary data dir and pinned
  to CPU 0 with ``taskset``; this generator pins itself to CPU 1. All traffic is 127.0.0.1.
- Participants are seeded through the admin CLI (``homeserver admin create-participant`` and
  ``create-key``, called in-process before the server starts): registration over REST hashes
  a password with argon2id (about 160 ms each here), which would make 1,000 users take
  minutes. Each stream client authenticates with its own API key.
- Every stream client is a raw asyncio WebSocket client (handshake plus a minimal frame
  parser, uvloop when installed): the ``websockets`` client saturates the generator's core
  near 100 k deliveries/s, well before this server does.
- Message content carries ``lg: [message number, CLOCK_MONOTONIC send time in ns]``, so every
  delivery gives a send -> deliver latency. Every client checks order (strictly increasing
  ``stream_position``) and completeness (it received every message acked in the room during
  the whole run, warm-up included); violations are reported.

Scenarios (``python bench/loadgen.py SCENARIO --help``)::

    ceiling  --clients N   closed loop, <= 64 messages outstanding (until all N have it)
    latency  --clients N --rate R   open loop, fixed rate, send -> deliver p50/p99
    acked    --senders S --members M   each sender waits for its ack (or pipelines a few)
    idle     --clients N   server RSS before/after N idle stream connections
    all      every figure of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MSG_PREFIX = b'{"type":"swp.room.message"'
SP_KEY = b'"stream_position":'
LG_KEY = b'"lg":['
BODY = "load test message " + "x" * 80  # ~100 characters of text, a typical chat line
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 120.0
DRAIN_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
SERVER_START_TIMEOUT = 30.0
OTHER_LOAD_LIMIT = 10.0  # % of one core used by other processes during a measured window


# --------------------------------------------------------------------------- /proc helpers


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


def code_fingerprint() -> str:
    """A short hash of the server's source (others edit it concurrently; no git here)."""
    digest = hashlib.sha256()
    for package in ("homeserver", "protocol", "storage", "conf"):
        for path in sorted((REPO / package).rglob("*")):
            if path.suffix in (".py", ".sql") and path.is_file():
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds over all cores since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first[:8]]
    idle = values[3] + values[4]
    total = sum(values)
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass(slots=True)
class CpuSample:
    wall: float
    server: float
    gen: float
    busy: float

    @classmethod
    def take(cls, pid: int) -> CpuSample:
        busy, _ = machine_busy_seconds()
        return cls(time.monotonic(), proc_cpu_seconds(pid), time.process_time(), busy)


def cpu_percent(a: CpuSample, b: CpuSample) -> dict[str, float]:
    wall = max(b.wall - a.wall, 1e-9)
    server = (b.server - a.server) / wall * 100
    gen = (b.gen - a.gen) / wall * 100
    busy = (b.busy - a.busy) / wall * 100
    return {
        "server_cpu_pct": round(server, 1),
        "gen_cpu_pct": round(gen, 1),
        "other_cpu_pct": round(max(busy - server - gen, 0.0), 1),
    }


def wait_quiet(max_wait: float, threshold: float = 10.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine is idle; return the busy % last seen.

    Busy is in % of one core over 1 s, all cores together. Other tenants' load skews every
    figure here, so runs start only once the machine is quiet (or the wait ran out).
    """
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = machine_busy_seconds()
        time.sleep(1.0)
        b1, _ = machine_busy_seconds()
        busy = (b1 - b0) * 100
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 1)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_summary(ns: array[int]) -> dict[str, float]:
    values = sorted(ns)
    ms = 1e-6
    return {
        "samples": len(values),
        "p50_ms": round(percentile(values, 50) * ms, 2),
        "p90_ms": round(percentile(values, 90) * ms, 2),
        "p99_ms": round(percentile(values, 99) * ms, 2),
        "max_ms": round((values[-1] if values else float("nan")) * ms, 2),
    }


# --------------------------------------------------------------------------- seeding + server


@dataclass(frozen=True, slots=True)
class User:
    username: str
    participant_id: str
    key: str


def seed_users(data_dir: Path, count: int) -> list[User]:
    """Create ``count`` password-less participants with one API key each (admin CLI)."""
    sys.path.insert(0, str(REPO))
    from homeserver import cli  # imported only when seeding: no side effects on import

    users: list[User] = []
    for i in range(count):
        name = f"bench{i:05d}"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc1 = cli.main(["admin", "create-participant", name, "--data-dir", str(data_dir)])
            rc2 = cli.main(["admin", "create-key", name, "--data-dir", str(data_dir)])
        if rc1 or rc2:
            raise RuntimeError(f"seeding {name} failed: {out.getvalue()!r}")
        kv = dict(part.split("=", 1) for part in out.getvalue().split() if "=" in part)
        users.append(User(name, kv["participant_id"], kv["key"]))
    return users


class Server:
    """The homeserver as a subprocess on a fresh data dir, pinned to one CPU."""

    def __init__(self, data_dir: Path, env: dict[str, str], cpu: int | None) -> None:
        self.data_dir = data_dir
        self.env = env
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.parent / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "homeserver"
        base = [str(script)] if script.exists() else [sys.executable, "-m", "homeserver.cli"]
        cmd = [*base, "serve", "--dev", "--port", "0", "--data-dir", str(self.data_dir)]
        taskset = shutil.which("taskset")
        if self.cpu is not None and taskset:
            cmd = [taskset, "-c", str(self.cpu), *cmd]
        return cmd

    def start(self) -> None:
        env = {**os.environ, **self.env}
        out_path = self.data_dir.parent / "server.out"
        with out_path.open("wb") as out, self.log_path.open("wb") as err:
            # taskset execs the server, so the pid is the server's own.
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            text = out_path.read_text(errors="replace")
            if "homeserver listening on http://" in text:
                url = text.split("homeserver listening on ", 1)[1].split()[0]
                self.port = int(url.rsplit(":", 1)[1].rstrip("/"))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start; log:\n{self.log_tail()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_count(self, needle: str) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").count(needle)
        return 0


def http_json(
    port: int, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        result: dict[str, Any] = orjson.loads(resp.read())
        return result


def create_room(port: int, users: Sequence[User]) -> str:
    """One room whose members are exactly ``users`` (the first one creates it)."""
    if len(users) > 1001:
        raise ValueError("at most 1001 members per room here (1000 initial members per call)")
    body = {
        "name": f"bench-{len(users)}",
        "initial_members": [{"type": "user", "id": u.participant_id} for u in users[1:]],
    }
    answer = http_json(port, "POST", "/v1/rooms", users[0].key, body)
    room = answer.get("data", answer)
    if room.get("member_count") not in (None, len(users)):
        raise RuntimeError(f"room has {room.get('member_count')} members, wanted {len(users)}")
    return str(room["room_id"])


# --------------------------------------------------------------------------- raw WebSocket client


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    mask = os.urandom(4)
    return head + mask + mask_payload(payload, mask)


class Run:
    """Counters and settings shared by every client of one scenario run."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.deliveries = 0
        self.foreign_events = 0
        self.ephemeral: dict[str, int] = {}
        self.errors: list[str] = []
        self.dropped = 0
        self.closing = False
        # Latency is kept for messages sent in [lat_lo, lat_hi) (monotonic ns).
        self.lat_lo = 0
        self.lat_hi = 0
        self.lat = array("q")
        # Closed loop: clients still to receive message number g (the list index).
        self.track = False
        self.remaining: list[int] = []
        self.outstanding = 0
        self.wake = asyncio.Event()
        self.next_g = 0
        self.sent = 0
        self.acked = 0
        self.ack_times = array("q")  # monotonic ns when each ack arrived
        self.ack_lat = array("q")  # send -> ack, ns
        self.acked_positions = array("q")

    def complete(self) -> None:
        self.outstanding -= 1
        self.wake.set()


class Client(asyncio.Protocol):
    """A stream client: handshake, frame parser, order/completeness bookkeeping."""

    def __init__(self, run: Run, index: int, key: str, port: int) -> None:
        self.run = run
        self.index = index
        self.key = key
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rest = b""
        self._upgraded = False
        self._ws_key = base64.b64encode(os.urandom(16))
        self.last_pos = 0
        self.positions = array("q")
        self.order_violations = 0
        self.close_code: int | None = None
        self.pending: dict[str, int] = {}  # req_id -> send time (ns)
        self.ack_waiters: dict[str, asyncio.Future[None]] = {}

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not an asyncio.Transport subclass, but has the same methods.
        self.transport = transport  # type: ignore[assignment]
        transport.write(  # type: ignore[attr-defined]
            b"GET /v1/stream?token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.key.encode(), HOST.encode(), self.port, self._ws_key)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.closing:
            self.run.dropped += 1
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed before hello ({self.close_code})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if not self._upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._rest = data
                return
            self._check_handshake(data[:end])
            self._upgraded = True
            data = data[end + 4 :]
        now = time.monotonic_ns()
        run = self.run
        rem = run.remaining if run.track else None
        lo, hi = run.lat_lo, run.lat_hi
        last = self.last_pos
        append = self.positions.append
        delivered = 0
        pos = 0
        n = len(data)
        # The hot path is inlined: at 100 k+ deliveries/s, every call and copy counts.
        while n - pos >= 2:
            ln = data[pos + 1] & 0x7F
            if ln < 126:
                start = pos + 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + ln
            if end > n:
                break
            b0 = data[pos]
            if b0 == 0x81 and data.startswith(MSG_PREFIX, start):
                i = data.find(SP_KEY, start, end)
                k = data.find(LG_KEY, start, end)
                if i >= 0 and k >= 0:
                    i += 18
                    position = int(data[i : data.find(b",", i, end)])
                    k += 6
                    c = data.find(b",", k, end)
                    if position <= last:
                        self.order_violations += 1
                    last = position
                    append(position)
                    delivered += 1
                    if rem is not None:
                        g = int(data[k:c])
                        left = rem[g] - 1
                        rem[g] = left
                        if not left:
                            run.complete()
                    t = int(data[c + 1 : data.find(b"]", c, end)])
                    if lo <= t < hi:
                        run.lat.append(now - t)
                    pos = end
                    continue
            self.last_pos = last
            if b0 == 0x81:
                self._on_text(data[start:end], now)
            else:
                self._on_control(b0, data[start:end])
            last = self.last_pos
            pos = end
        self.last_pos = last
        run.deliveries += delivered
        if pos < n:
            self._rest = data[pos:]

    # -- frames -------------------------------------------------------------

    def _check_handshake(self, head: bytes) -> None:
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {status!r}")
        accept = base64.b64encode(hashlib.sha1(self._ws_key + WS_GUID).digest())
        if accept not in head:
            raise ConnectionError("bad Sec-WebSocket-Accept")

    def _on_text(self, payload: bytes, now: int) -> None:
        if payload.startswith(MSG_PREFIX):
            i = payload.find(SP_KEY)
            k = payload.find(LG_KEY)
            if i >= 0 and k >= 0:
                i += 18
                position = int(payload[i : payload.find(b",", i)])
                k += 6
                g, t = payload[k : payload.find(b"]", k)].split(b",")
                self._on_message(position, int(g), int(t), now)
                return
        self._on_json(orjson.loads(payload), now)

    def _on_message(self, position: int, g: int, t: int, now: int) -> None:
        if position <= self.last_pos:
            self.order_violations += 1
        self.last_pos = position
        self.positions.append(position)
        run = self.run
        run.deliveries += 1
        if run.track and 0 <= g < len(run.remaining):
            left = run.remaining[g] - 1
            run.remaining[g] = left
            if not left:
                run.complete()
        if run.lat_lo <= t < run.lat_hi:
            run.lat.append(now - t)

    def _on_json(self, obj: dict[str, Any], now: int) -> None:
        kind = obj.get("type")
        if kind == "hello":
            if not self.hello.done():
                self.hello.set_result(obj)
        elif kind == "ack":
            self._on_ack(obj, now)
        elif kind == "error":
            req_id = obj.get("req_id")
            self.run.errors.append(orjson.dumps(obj.get("error")).decode()[:200])
            if isinstance(req_id, str):
                self.pending.pop(req_id, None)
                waiter = self.ack_waiters.pop(req_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(RuntimeError(f"send refused: {obj.get('error')}"))
        elif "stream_position" in obj:
            content = obj.get("content")
            lg = content.get("lg") if isinstance(content, dict) else None
            if kind == "swp.room.message" and isinstance(lg, list) and len(lg) == 2:
                self._on_message(int(obj["stream_position"]), int(lg[0]), int(lg[1]), now)
            else:
                position = int(obj["stream_position"])
                if position <= self.last_pos:
                    self.order_violations += 1
                self.last_pos = position
                self.run.foreign_events += 1
        else:
            name = str(kind)
            self.run.ephemeral[name] = self.run.ephemeral.get(name, 0) + 1

    def _on_ack(self, obj: dict[str, Any], now: int) -> None:
        run = self.run
        req_id = str(obj.get("req_id"))
        sent_at = self.pending.pop(req_id, None)
        run.acked += 1
        run.ack_times.append(now)
        if sent_at is not None:
            run.ack_lat.append(now - sent_at)
        event = obj.get("event") or {}
        run.acked_positions.append(int(event.get("stream_position", 0)))
        waiter = self.ack_waiters.pop(req_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_control(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        assert self.transport is not None
        if opcode == 0x9:  # ping
            self.transport.write(client_frame(0xA, payload))
        elif opcode == 0x8:  # close
            if len(payload) >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
                self.run.errors.append(
                    f"client {self.index} closed by server: {self.close_code} "
                    f"{payload[2:].decode(errors='replace')}"
                )
            self.transport.write(client_frame(0x8, payload[:2]))
            self.transport.close()
        elif opcode != 0xA:
            self.run.errors.append(f"client {self.index}: unexpected frame 0x{b0:02x}")

    # -- sending ------------------------------------------------------------

    def send_message(self, g: int, *, want_ack: bool = False) -> asyncio.Future[None] | None:
        """Send one message numbered ``g`` (send time embedded); optionally await its ack."""
        assert self.transport is not None
        run = self.run
        req_id = str(g)
        waiter: asyncio.Future[None] | None = None
        if want_ack:
            waiter = asyncio.get_running_loop().create_future()
            self.ack_waiters[req_id] = waiter
        t = time.monotonic_ns()
        frame = orjson.dumps(
            {
                "type": "send",
                "req_id": req_id,
                "room_id": run.room_id,
                "content": {"msgtype": "swp.text", "body": BODY, "lg": [g, t]},
            }
        )
        self.pending[req_id] = t
        self.transport.write(client_frame(0x1, frame))
        run.sent += 1
        return waiter

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x8, struct.pack("!H", 1000)))
            self.transport.close()


async def open_clients(run: Run, port: int, keys: Sequence[str], first: int = 0) -> list[Client]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int, key: str) -> Client:
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client(run, index, key, port), HOST, port
            )
            await asyncio.wait_for(client.hello, 30)
            return client

    return await asyncio.wait_for(
        asyncio.gather(*(one(first + i, k) for i, k in enumerate(keys))), CONNECT_TIMEOUT
    )


async def close_clients(run: Run, clients: Sequence[Client]) -> None:
    run.closing = True
    for c in clients:
        c.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), 10)


# --------------------------------------------------------------------------- checks


def check_clients(run: Run, clients: Sequence[Client]) -> dict[str, Any]:
    """Order and completeness: every client has every acked message, once, in order."""
    expected = set(run.acked_positions)
    expected.discard(0)
    missing_total = 0
    clients_missing = 0
    duplicates = 0
    unexpected = 0
    order = 0
    for c in clients:
        got = set(c.positions)
        duplicates += len(c.positions) - len(got)
        missing = len(expected - got)
        unexpected += len(got - expected)
        if missing:
            clients_missing += 1
            missing_total += missing
        order += c.order_violations
    return {
        "clients": len(clients),
        "messages_sent": run.sent,
        "messages_acked": run.acked,
        "order_violations": order,
        "clients_missing_messages": clients_missing,
        "missing_deliveries": missing_total,
        "duplicate_deliveries": duplicates,
        "unacked_but_delivered": unexpected,
        "dropped_connections": run.dropped,
        "errors": len(run.errors),
        "first_errors": run.errors[:5],
        "ok": not (order or missing_total or duplicates or run.dropped or run.errors)
        and run.acked == run.sent,
    }


def db_figures(db_path: Path, messages: int) -> dict[str, Any]:
    """After the server stopped: checkpoint, then bytes of the event table per event."""
    out: dict[str, Any] = {}
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        try:
            rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.Error:
            rows = []
        sizes = dict(rows)
        index_names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE tbl_name = 'events' AND type = 'index'"
            )
        ]
    event_bytes = sum(sizes.get(n, 0) for n in ["events", *index_names])
    out["events_rows"] = events
    out["db_file_bytes_after_checkpoint"] = db_path.stat().st_size
    if events and event_bytes:
        out["events_table_and_index_bytes"] = event_bytes
        out["stored_bytes_per_event"] = round(event_bytes / events)
    if messages:
        out["db_file_bytes_per_message_all_in"] = round(db_path.stat().st_size / messages)
    return out


# --------------------------------------------------------------------------- scenarios


@dataclass(slots=True)
class Options:
    warmup: float = 1.0
    measure: float = 8.0
    sync: str = "full"
    uvloop: bool = True
    pin: bool = True
    keep: bool = False
    profile: str | None = None
    quiet_wait: float = 0.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Bench:
    """One server on a fresh data dir, seeded with ``users`` participants in one room."""

    opts: Options
    users: int
    tmp: Path = field(init=False)
    server: Server = field(init=False)
    people: list[User] = field(init=False)
    room_id: str = field(init=False)
    seed_seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="swbench-"))

    def setup(self, members: int | None = None) -> None:
        data_dir = self.tmp / "data"
        started = time.monotonic()
        self.people = seed_users(data_dir, self.users)
        self.seed_seconds = time.monotonic() - started
        env = {
            "HOMESERVER_RATE_LIMIT_MESSAGES": "0",
            "HOMESERVER_LOG_LEVEL": "warning",
            "HOMESERVER_DB_SYNCHRONOUS": self.opts.sync,
            **self.opts.env,
        }
        self.server = Server(data_dir, env, 0 if self.opts.pin else None)
        self.server.start()
        self.room_id = create_room(self.server.port, self.people[: members or self.users])

    @property
    def db_path(self) -> Path:
        return self.tmp / "data" / "homeserver.db"

    def teardown(self) -> dict[str, Any]:
        rc = self.server.stop()
        info: dict[str, Any] = {
            "server_exit_code": rc,
            "server_log_warnings": self.server.log_count(" WARNING "),
            "server_log_errors": self.server.log_count(" ERROR "),
        }
        if rc not in (0, None):
            info["server_log_tail"] = self.server.log_tail()
        return info

    def cleanup(self) -> None:
        if self.opts.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Profiler:
    """py-spy record on the server pid during the measured window (optional)."""

    def __init__(self, path: str | None, pid: int, seconds: float) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if not path:
            return
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            print("py-spy not found; not profiling", file=sys.stderr)
            return
        cmd = [
            spy,
            "record",
            "-o",
            path,
            "--format",
            "raw",
            "-r",
            "100",
            "--nonblocking",
            "--threads",
        ]
        cmd += ["-d", str(max(1, int(seconds))), "-p", str(pid)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.path = path

    def finish(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            print(profile_summary(self.path), file=sys.stderr)


def profile_summary(path: str, top: int = 25) -> str:
    """Self and inclusive sample shares per function from a py-spy raw (collapsed) file."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), Path(path).open() as fh:
        for line in fh:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            total += count
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for f in set(frames):
                incl[f] = incl.get(f, 0) + count
    if not total:
        return f"profile {path}: no samples"
    lines = [f"profile {path}: {total} samples", "self%  incl%  function"]
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{count / total * 100:5.1f}  {incl[name] / total * 100:5.1f}  {name}")
    lines.append("-- inclusive --")
    for name, count in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{count / total * 100:5.1f}  {name}")
    return "\n".join(lines)


async def _until(pred: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


@dataclass(slots=True)
class Window:
    start_ns: int = 0
    end_ns: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    deliveries: int = 0
    sent: int = 0
    dir_bytes_before: int = 0
    dir_bytes_after: int = 0

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


async def _measure(bench: Bench, run: Run, load: Callable[[float], Any], win: Window) -> None:
    """warm-up, measured window (cpu, deliveries), then stop the load."""
    opts = bench.opts
    pid = bench.server.pid
    loop_task = asyncio.ensure_future(load(opts.warmup + opts.measure))
    await asyncio.sleep(opts.warmup)
    win.start_ns = time.monotonic_ns()
    run.lat_lo, run.lat_hi = win.start_ns, win.start_ns + int(opts.measure * 1e9)
    d0, s0 = run.deliveries, run.sent
    c0 = CpuSample.take(pid)
    prof = Profiler(opts.profile, pid, opts.measure)
    await asyncio.sleep(opts.measure)
    c1 = CpuSample.take(pid)
    win.end_ns = time.monotonic_ns()
    win.deliveries = run.deliveries - d0
    win.sent = run.sent - s0
    win.cpu = cpu_percent(c0, c1)
    await asyncio.wait_for(loop_task, 30)
    prof.finish()


async def _fanout(
    bench: Bench, mode: str, clients_n: int, senders_n: int, rate: float
) -> dict[str, Any]:
    run = Run(bench.room_id)
    pid = bench.server.pid
    rss0 = proc_rss_kb(pid)
    t0 = time.monotonic()
    clients = await open_clients(run, bench.server.port, [u.key for u in bench.people[:clients_n]])
    connect_s = time.monotonic() - t0
    await asyncio.sleep(0.5)
    rss1 = proc_rss_kb(pid)
    senders = clients[:senders_n]
    win = Window(dir_bytes_before=dir_bytes(bench.tmp / "data"))

    async def closed_loop(duration: float) -> None:
        run.track = True
        end = time.monotonic() + duration
        i = 0
        while time.monotonic() < end:
            while run.outstanding < 64:
                g = run.next_g
                run.next_g += 1
                run.remaining.append(clients_n)
                run.outstanding += 1
                senders[i % senders_n].send_message(g)
                i += 1
            run.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), 0.5)

    async def open_loop(duration: float) -> None:
        start = time.monotonic()
        k = 0
        while True:
            due = start + k / rate
            if due >= start + duration:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            senders[k % senders_n].send_message(run.next_g)
            run.next_g += 1
            k += 1

    await _measure(bench, run, closed_loop if mode == "ceiling" else open_loop, win)
    expected = run.sent * clients_n
    drained = await _until(
        lambda: run.deliveries >= expected and run.acked + len(run.errors) >= run.sent,
        DRAIN_TIMEOUT,
    )
    await asyncio.sleep(0.3)  # anything extra (duplicates) would show up now
    win.dir_bytes_after = dir_bytes(bench.tmp / "data")
    checks = check_clients(run, clients)
    await close_clients(run, clients)
    result: dict[str, Any] = {
        "clients": clients_n,
        "senders": senders_n,
        "connect_seconds": round(connect_s, 2),
        "window_seconds": round(win.seconds, 2),
        "deliveries_per_s": round(win.deliveries / win.seconds),
        "messages_per_s": round(win.sent / win.seconds, 1),
        **win.cpu,
        "send_to_deliver": latency_summary(run.lat),
        "send_to_ack": latency_summary(run.ack_lat),
        "drained": drained,
        "server_rss_kb_before_connect": rss0,
        "server_rss_kb_connected": rss1,
        "db_dir_growth_bytes_per_message": round(
            (win.dir_bytes_after - win.dir_bytes_before) / max(run.sent, 1)
        ),
        "ephemeral_frames": run.ephemeral,
        "checks": checks,
    }
    if mode == "latency":
        result["rate_msgs_per_s"] = rate
    return result


async def _acked(
    bench: Bench, members: int, senders_n: int, pipeline: int, listeners: int | None
) -> dict[str, Any]:
    run = Run(bench.room_id)
    connected = members if listeners is None else max(senders_n, min(listeners, members))
    clients = await open_clients(run, bench.server.port, [u.key for u in bench.people[:connected]])
    senders = clients[:senders_n]
    win = Window(dir_bytes_before=dir_bytes(bench.tmp / "data"))
    ack_timeout = 30.0

    async def sender_loop(sender: Client, end: float) -> None:
        while time.monotonic() < end:
            g = run.next_g
            run.next_g += 1
            waiter = sender.send_message(g, want_ack=True)
            assert waiter is not None
            try:
                await asyncio.wait_for(waiter, ack_timeout)
            except (TimeoutError, RuntimeError) as exc:
                run.errors.append(f"sender {sender.index}: {exc!r}"[:200])
                return

    async def load(duration: float) -> None:
        end = time.monotonic() + duration
        await asyncio.gather(*(sender_loop(s, end) for s in senders for _ in range(pipeline)))

    await _measure(bench, run, load, win)
    acks_in_window = sum(1 for t in run.ack_times if win.start_ns <= t < win.end_ns)
    expected = run.sent * connected
    drained = await _until(lambda: run.deliveries >= expected, DRAIN_TIMEOUT)
    await asyncio.sleep(0.3)
    win.dir_bytes_after = dir_bytes(bench.tmp / "data")
    checks = check_clients(run, clients)
    await close_clients(run, clients)
    return {
        "members": members,
        "connected_members": connected,
        "senders": senders_n,
        "pipeline": pipeline,
        "db_synchronous": bench.opts.sync,
        "window_seconds": round(win.seconds, 2),
        "acked_sends_per_s": round(acks_in_window / win.seconds),
        "deliveries_per_s": round(win.deliveries / win.seconds),
        **win.cpu,
        "send_to_ack": latency_summary(run.ack_lat),
        "send_to_deliver": latency_summary(run.lat),
        "drained": drained,
        "db_dir_growth_bytes_per_message": round(
            (win.dir_bytes_after - win.dir_bytes_before) / max(run.sent, 1)
        ),
        "checks": checks,
    }


async def _idle(bench: Bench, clients_n: int, settle: float) -> dict[str, Any]:
    run = Run(bench.room_id)
    pid = bench.server.pid
    await asyncio.sleep(settle)
    rss0 = proc_rss_kb(pid)
    t0 = time.monotonic()
    clients = await open_clients(run, bench.server.port, [u.key for u in bench.people[:clients_n]])
    connect_s = time.monotonic() - t0
    await asyncio.sleep(settle)
    c0 = CpuSample.take(pid)
    await asyncio.sleep(2.0)
    c1 = CpuSample.take(pid)
    rss1 = proc_rss_kb(pid)
    await close_clients(run, clients)
    await asyncio.sleep(settle)
    rss2 = proc_rss_kb(pid)
    return {
        "clients": clients_n,
        "connect_seconds": round(connect_s, 2),
        "server_rss_kb_before": rss0,
        "server_rss_kb_with_clients": rss1,
        "server_rss_kb_after_close": rss2,
        "rss_kb_per_connection": round((rss1 - rss0) / clients_n, 2),
        "idle_server_cpu_pct": cpu_percent(c0, c1)["server_cpu_pct"],
        "dropped_connections": run.dropped,
        "errors": run.errors[:5],
    }


def _event_loop_runner(opts: Options) -> Callable[[Any], Any]:
    if opts.uvloop:
        try:
            import uvloop  # optional
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


def run_scenario(opts: Options, name: str, **kw: Any) -> dict[str, Any]:
    """Start a fresh server, run one scenario against it, stop it, return the figures."""
    users = kw["members"] if name == "acked" else kw["clients"]
    bench = Bench(opts, users)
    started = time.monotonic()
    result: dict[str, Any] = {
        "scenario": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "code_fingerprint": code_fingerprint(),
        "options": {k: v for k, v in asdict(opts).items() if k != "profile"},
        "params": kw,
    }
    runner = _event_loop_runner(opts)
    if opts.quiet_wait > 0:
        result["machine_busy_pct_before"] = wait_quiet(opts.quiet_wait)
    try:
        bench.setup()
        result["seed_seconds"] = round(bench.seed_seconds, 1)
        result["server_pid"] = bench.server.pid
        if name in ("ceiling", "latency"):
            coro = _fanout(bench, name, kw["clients"], kw["senders"], kw.get("rate", 0.0))
        elif name == "acked":
            coro = _acked(bench, kw["members"], kw["senders"], kw["pipeline"], kw.get("listeners"))
        else:
            coro = _idle(bench, kw["clients"], 1.0)
        result.update(runner(coro))
        result.update(bench.teardown())
        if name != "idle":
            result.update(
                db_figures(bench.db_path, result.get("checks", {}).get("messages_sent", 0))
            )
    except BaseException:
        print(f"server log tail:\n{bench.server.log_tail()}", file=sys.stderr)
        with contextlib.suppress(Exception):
            bench.teardown()
        raise
    finally:
        bench.cleanup()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


# --------------------------------------------------------------------------- reporting + CLI


def headline(r: dict[str, Any]) -> str:
    s = r["scenario"]
    cpu = f"server {r.get('server_cpu_pct', '?')}% gen {r.get('gen_cpu_pct', '?')}%"
    ok = r.get("checks", {}).get("ok")
    check = "" if ok is None else (" checks OK" if ok else " CHECKS FAILED")
    if r.get("other_cpu_pct", 0) > OTHER_LOAD_LIMIT:
        check += f" (other load {r['other_cpu_pct']}%: figure unreliable)"
    if s in ("ceiling", "latency"):
        lat = r["send_to_deliver"]
        return (
            f"{s} N={r['clients']}: {r['deliveries_per_s']:,} deliveries/s "
            f"({r['messages_per_s']} msgs/s), send->deliver p50 {lat['p50_ms']} ms "
            f"p99 {lat['p99_ms']} ms; {cpu};{check}"
        )
    if s == "acked":
        lat = r["send_to_ack"]
        return (
            f"acked M={r['members']} (connected {r['connected_members']}) S={r['senders']} "
            f"P={r['pipeline']} "
            f"sync={r['db_synchronous']}: {r['acked_sends_per_s']:,} acked sends/s, "
            f"send->ack p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms; "
            f"{r['deliveries_per_s']:,} deliveries/s; {cpu};{check}"
        )
    return (
        f"idle N={r['clients']}: RSS {r['server_rss_kb_before']} -> "
        f"{r['server_rss_kb_with_clients']} kB = {r['rss_kb_per_connection']} kB/connection"
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--measure", type=float, default=8.0, help="measured seconds")
    p.add_argument("--sync", choices=["full", "normal"], default="full")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/generator CPUs")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--profile", help="py-spy raw output path (server, measured window)")
    p.add_argument("--env", action="append", default=[], help="extra server env KEY=VALUE")
    p.add_argument("--json", help="append results (JSON lines) to this file")
    p.add_argument(
        "--attempts",
        type=int,
        default=3,
        help=f"runs when other load exceeds {OTHER_LOAD_LIMIT}%% (the cleanest is kept)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="wait up to this many seconds for other load to stop before each run",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("ceiling", help="closed-loop deliveries/s ceiling")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--senders", type=int, default=4)
    _add_common(p)
    p = sub.add_parser("latency", help="fixed rate, send->deliver latency")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="messages/s in total")
    p.add_argument("--senders", type=int, default=4)
    _add_common(p)
    p = sub.add_parser("acked", help="acked durable sends/s")
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--pipeline", type=int, default=1, help="sends in flight per sender")
    p.add_argument(
        "--listeners",
        type=int,
        help="members with a stream connection (default: all; the senders always are)",
    )
    _add_common(p)
    p = sub.add_parser("idle", help="server RSS per idle connection")
    p.add_argument("--clients", type=int, default=1000)
    _add_common(p)
    p = sub.add_parser("all", help="every figure of bench/RESULTS.md")
    _add_common(p)
    return parser.parse_args(argv)


def all_runs() -> Iterator[tuple[str, dict[str, Any], str | None]]:
    for n in (10, 200, 1000):
        yield "ceiling", {"clients": n, "senders": 4}, None
    yield "latency", {"clients": 200, "senders": 4, "rate": 20.0}, None
    for sync in ("full", "normal"):
        for m in (20, 220):
            yield "acked", {"members": m, "senders": 20, "pipeline": 1}, sync
        # The 220-member room with only the 20 senders connected (no fan-out to 200 idle ones).
        yield "acked", {"members": 220, "senders": 20, "pipeline": 1, "listeners": 20}, sync
    yield "idle", {"clients": 1000}, None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        warmup=args.warmup,
        measure=args.measure,
        sync=args.sync,
        uvloop=not args.no_uvloop,
        pin=not args.no_pin,
        keep=args.keep,
        profile=args.profile,
        quiet_wait=args.quiet_wait,
        env=dict(e.split("=", 1) for e in args.env),
    )
    if opts.pin and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    if args.scenario == "all":
        plan = list(all_runs())
    else:
        kw = {
            k: v
            for k, v in vars(args).items()
            if k in ("clients", "senders", "rate", "members", "pipeline", "listeners")
        }
        plan = [(args.scenario, kw, None)]
    failed = False
    for name, kw, sync in plan:
        run_opts = Options(**{**asdict(opts), "sync": sync or opts.sync})
        result = run_scenario(run_opts, name, **kw)
        # Other tenants' load on this 2-core machine skews everything: retry, keep the cleanest.
        for attempt in range(2, args.attempts + 1):
            if result.get("other_cpu_pct", 0) <= OTHER_LOAD_LIMIT:
                break
            print(f"{headline(result)} -> attempt {attempt}", file=sys.stderr, flush=True)
            again = run_scenario(run_opts, name, **kw)
            again["attempt"] = attempt
            if again.get("other_cpu_pct", 0) < result.get("other_cpu_pct", 0):
                result = again
        print(headline(result), flush=True)
        print(json.dumps(result, indent=1), file=sys.stderr)
        if args.json:
            with Path(args.json).open("a") as fh:
                fh.write(json.dumps(result) + "\n")
        failed |= result.get("checks", {}).get("ok") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
