"""End to end: the real ``homeserver`` process, real sockets, real signals.

Each test starts ``python -m homeserver.cli serve --dev --port 0`` on a
temporary data directory, waits for the ``homeserver listening on ...`` line
on stdout and talks HTTP to it with httpx. Every process a test starts is
killed in teardown, whatever happened.

The tests are plain sync functions: the server runs in its own process, and
the few concurrent clients of the durability test are threads.
"""

from __future__ import annotations

import itertools
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage import db, migrate
from tests.serverproc import REPO, ServerProcess, clean_env

pytestmark = pytest.mark.e2e

START_TIMEOUT = 20.0
PASSWORD = "correct horse battery"


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without HOMESERVER_*, durable writes, plus ``extra``."""
    return clean_env(extra, synchronous="full")


@dataclass
class Servers:
    """Starts servers for one test; every one is killed at teardown."""

    tmp: Path
    started: list[ServerProcess] = field(default_factory=list)

    def start(self, data_dir: Path, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(
            data_dir, self.tmp / f"server-{len(self.started)}.log", env, synchronous="full"
        )
        self.started.append(server)
        server.wait_ready(START_TIMEOUT)
        return server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    pool = Servers(tmp_path)
    try:
        yield pool
    finally:
        for server in pool.started:
            server.stop()


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``homeserver admin ...`` (or any sub-command) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "homeserver.cli", *args, "--data-dir", str(data_dir)],
        cwd=REPO,
        env=_clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- a tiny client


@dataclass
class Client:
    http: httpx.Client
    token: str = ""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def call(
        self, method: str, path: str, *, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        bearer = self.token if token is None else token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return self.http.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.call(method, path, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        body = r.json()
        assert body["status"] == "ok", body
        return body["data"]

    def register(self, username: str) -> str:
        data = self.ok(
            "POST",
            "/v1/auth/register",
            status=201,
            token="",
            json={"username": username, "password": PASSWORD},
        )
        self.token = data["access_token"]
        return str(data["participant_id"])

    def room(self, name: str = "e2e") -> str:
        return str(self.ok("POST", "/v1/rooms", status=201, json={"name": name})["id"])

    def send(self, room_id: str, body: str, **extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.ok(
            "POST",
            f"/v1/rooms/{room_id}/send",
            json={"content": {"msgtype": "swp.text", "body": body}, **extra},
        )
        return data

    def history(self, room_id: str) -> list[dict[str, Any]]:
        """The whole room, oldest first, by forward paging with the cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            params = {"direction": "forward", "limit": "200"}
            if cursor is not None:
                params["from"] = cursor
            r = self.call("GET", f"/v1/rooms/{room_id}/messages", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            page = body["data"]["items"]
            items += page
            if not body["meta"]["has_more"]:
                return items
            assert page, "has_more with an empty page"
            cursor = body["meta"]["next_cursor"]
        raise AssertionError("history paging did not end")


def client_for(server: ServerProcess, token: str = "") -> Client:
    return Client(httpx.Client(base_url=server.base_url, timeout=30), token)


def messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in items if e["type"] == "swp.room.message"]


# ---------------------------------------------------------------- tests


def test_health_register_room_send_history(servers: Servers, tmp_path: Path) -> None:
    server = servers.start(tmp_path / "data")
    assert (tmp_path / "data" / "homeserver.db").exists()
    with client_for(server) as c:
        http = c.http
        r = http.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert http.get("/v1/me").status_code == 401
        me = c.register("alice")
        assert c.ok("GET", "/v1/me")["participant_id"] == me
        room = c.room()
        sent = [c.send(room, f"hello {i}") for i in range(3)]
        assert all(e["id"].startswith("evt-") for e in sent)
        positions = [e["stream_position"] for e in sent]
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        history = messages(c.history(room))
        assert [e["id"] for e in history] == [e["id"] for e in sent]
        assert [e["content"]["body"] for e in history] == ["hello 0", "hello 1", "hello 2"]
        # the chain as the wire shows it
        for before, after in itertools.pairwise(history):
            assert after["prev_event_ids"] == [before["id"]]
            assert after["depth"] == before["depth"] + 1
    assert "open registration" in server.log_text()


def test_sigterm_exits_cleanly_and_data_survives_restart(servers: Servers, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = servers.start(data_dir)
    with client_for(server) as c:
        c.register("alice")
        room = c.room()
        sent = c.send(room, "before the signal")
        # The pooled keep-alive connection is still open when the signal arrives.
        started = time.monotonic()
        code = server.signal(signal.SIGTERM, timeout=10)
        assert code == 0, server.log_text()[-4000:]
        assert time.monotonic() - started < 10
        assert "SIGTERM" in server.log_text()

    again = servers.start(data_dir)
    with client_for(again, c.token) as c2:
        assert c2.http.get("/health").status_code == 200
        history = messages(c2.history(room))
        assert [(e["id"], e["stream_position"]) for e in history] == [
            (sent["id"], sent["stream_position"])
        ]
        more = c2.send(room, "after the restart")
        assert more["stream_position"] > sent["stream_position"]
        assert more["prev_event_ids"] == [sent["id"]]


@dataclass
class Ack:
    event_id: str
    position: int
    body: str
    uuid: str


def _sender(
    base_url: str,
    token: str,
    room: str,
    worker: int,
    acks: list[Ack],
    stop: threading.Event,
    failures: list[str],
) -> None:
    """Send as fast as one connection allows; record every acknowledged event."""
    with Client(httpx.Client(base_url=base_url, timeout=10), token) as c:
        i = 0
        while not stop.is_set():
            body = f"w{worker}-{i}"
            uuid = f"uuid-{body}"
            try:
                r = c.call(
                    "POST",
                    f"/v1/rooms/{room}/send",
                    json={"content": {"msgtype": "swp.text", "body": body}, "event_uuid": uuid},
                )
            except httpx.TransportError:
                return  # the server died under us: this send was never acknowledged
            if r.status_code != 200:
                failures.append(f"{body}: {r.status_code} {r.text[:200]}")
                return
            event = r.json()["data"]
            acks.append(Ack(event["id"], event["stream_position"], body, uuid))
            i += 1


WORKERS = 4


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_acknowledged_events_survive_a_crash(
    servers: Servers, tmp_path: Path, signum: signal.Signals
) -> None:
    """The issue's durability requirement: an ACK means the event is on disk."""
    data_dir = tmp_path / "data"
    env = {"HOMESERVER_RATE_LIMIT_MESSAGES": "0"}  # 0 = unlimited; we want throughput
    server = servers.start(data_dir, env)
    with client_for(server) as c:
        c.register("alice")
        room = c.room("durability")
        token = c.token

    per_worker: list[list[Ack]] = [[] for _ in range(WORKERS)]
    failures: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_sender,
            args=(server.base_url, token, room, w, per_worker[w], stop, failures),
            daemon=True,
        )
        for w in range(WORKERS)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - started < 1.5 and sum(map(len, per_worker)) < 400 and not failures:
        time.sleep(0.01)
    # Mid-run: every worker has a request in flight or about to be.
    if signum == signal.SIGKILL:
        server.proc.kill()
        server.proc.wait(10)
    else:
        code = server.signal(signal.SIGTERM, timeout=10)
        assert code == 0, server.log_text()[-4000:]
    stop.set()
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a sender thread hung after the server died"
    assert not failures, failures
    acked = [a for acks in per_worker for a in acks]
    assert len(acked) >= 20, f"only {len(acked)} sends were acknowledged before the kill"

    # Each worker sends one at a time, so its acks are in position order.
    for acks in per_worker:
        positions = [a.position for a in acks]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)

    again = servers.start(data_dir, env)
    with client_for(again, token) as c2:
        stored = messages(c2.history(room))
        by_id = {e["id"]: e for e in stored}
        missing = [a for a in acked if a.event_id not in by_id]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged events were lost"
        for a in acked:
            e = by_id[a.event_id]
            assert e["stream_position"] == a.position
            assert e["content"]["body"] == a.body
        # Same order: the stored history is in position order, and so are the acks.
        positions = [e["stream_position"] for e in stored]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        acked_ids = [a.event_id for a in sorted(acked, key=lambda a: a.position)]
        assert [e["id"] for e in stored if e["id"] in {a.event_id for a in acked}] == acked_ids
        # At most one unacknowledged (in-flight) send per worker may have made it,
        # and none twice.
        extra = [e for e in stored if e["id"] not in {a.event_id for a in acked}]
        assert len(extra) <= WORKERS, [e["content"] for e in extra]
        bodies = [e["content"]["body"] for e in stored]
        assert len(set(bodies)) == len(bodies)
        # Idempotency keys survive the restart too: a retry returns the stored event.
        last = per_worker[0][-1] if per_worker[0] else acked[-1]
        retry = c2.send(room, last.body, event_uuid=last.uuid)
        assert (retry["id"], retry["stream_position"]) == (last.event_id, last.position)
        assert len(messages(c2.history(room))) == len(stored)


def test_admin_cli_and_config_errors(servers: Servers, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = servers.start(data_dir)

    carol = cli(data_dir, "admin", "create-participant", "carol", "--type", "bot")
    assert carol.returncode == 0, carol.stderr
    match = re.search(r"participant_id=(\S+)", carol.stdout)
    assert match, carol.stdout
    assert match.group(1).startswith("ai-")
    assert "type=bot" in carol.stdout

    dave = cli(
        data_dir,
        "admin",
        "create-participant",
        "dave",
        "--password",
        env={"HOMESERVER_ADMIN_PASSWORD": PASSWORD},
    )
    assert dave.returncode == 0, dave.stderr
    match = re.search(r"participant_id=(\S+)", dave.stdout)
    assert match, dave.stdout
    dave_id = match.group(1)
    assert dave_id.startswith("p-")

    taken = cli(data_dir, "admin", "create-participant", "dave")
    assert taken.returncode != 0
    assert "dave" in taken.stderr

    # CONTRACT 10: tenants; --admin makes a tenant admin.
    assert "tenant=ten_default" in dave.stdout
    erin = cli(data_dir, "admin", "create-participant", "erin", "--tenant", "ten_acme", "--admin")
    assert erin.returncode == 0, erin.stderr
    assert "tenant=ten_acme" in erin.stdout
    assert "admin=true" in erin.stdout
    bad = cli(data_dir, "admin", "create-participant", "frank", "--tenant", "no spaces")
    assert bad.returncode != 0
    assert "tenant" in bad.stderr

    key_run = cli(data_dir, "admin", "create-key", "dave")
    assert key_run.returncode == 0, key_run.stderr
    match = re.search(r"key=(swk_\S+)", key_run.stdout)
    assert match, key_run.stdout
    key = match.group(1)
    assert len(key) >= 4 + 32

    nobody = cli(data_dir, "admin", "create-key", "nobody")
    assert nobody.returncode != 0
    assert "nobody" in nobody.stderr

    with client_for(server) as c:
        me = c.ok("GET", "/v1/me", token=key)
        assert me["participant_id"] == dave_id
        assert me["username"] == "dave"
        assert c.call("GET", "/v1/me", token="swk_" + "x" * 43).status_code == 401

        grant = c.ok(
            "POST",
            "/v1/auth/token",
            token="",
            json={"grant_type": "password", "username": "dave", "password": PASSWORD},
        )
        assert grant["token_type"] == "bearer"
        assert c.ok("GET", "/v1/me", token=grant["access_token"])["participant_id"] == dave_id
        wrong = c.call(
            "POST",
            "/v1/auth/token",
            token="",
            json={"grant_type": "password", "username": "dave", "password": "wrong password"},
        )
        assert wrong.status_code == 401
        # carol has no password: no password grant for her
        carol_grant = c.call(
            "POST",
            "/v1/auth/token",
            token="",
            json={"grant_type": "password", "username": "carol", "password": PASSWORD},
        )
        assert carol_grant.status_code == 401

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "homeserver.cli",
            "serve",
            "--dev",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "other"),
        ],
        cwd=REPO,
        env=_clean_env({"HOMESERVER_PORT": "abc"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode != 0
    assert "HOMESERVER_PORT" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    assert "homeserver listening" not in bad.stdout


def _serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to refuse to start (a hang fails by timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "homeserver.cli", "serve", "--data-dir", str(data_dir), *args],
        cwd=REPO,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_serve_start_up_failures_are_one_line_errors(tmp_path: Path) -> None:
    # The port is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _serve_once(tmp_path / "a", "--port", str(port))
    assert busy.returncode != 0
    assert str(port) in busy.stderr
    assert "Traceback" not in busy.stderr, busy.stderr[-2000:]

    # The database was written by a newer server.
    data_dir = tmp_path / "b"
    data_dir.mkdir()
    conn = db.connect(data_dir / "homeserver.db")
    try:
        migrate.migrate(conn)
        conn.execute("INSERT INTO schema_version (version, name) VALUES (9999, '9999_future.sql')")
    finally:
        conn.close()
    newer = _serve_once(data_dir, "--port", "0")
    assert newer.returncode != 0
    assert "newer" in newer.stderr
    assert "Traceback" not in newer.stderr, newer.stderr[-2000:]
    assert "homeserver listening" not in newer.stdout
    admin = cli(data_dir, "admin", "create-participant", "erin")
    assert admin.returncode != 0
    assert "newer" in admin.stderr
    assert "Traceback" not in admin.stderr, admin.stderr[-2000:]
