"""Real engines for the cluster tests: a ``redis-server`` on a free port and N
``homeserver serve`` processes (tests/serverproc.py) that share one database.

The Redis server runs with no persistence (``--save "" --appendonly no``), so a
restart loses everything it held: what survives must come from the database.
Tests skip, with the reason, when ``redis-server`` is not installed (``make
test`` installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serverproc import ServerProcess

PASSWORD = "correct horse battery"
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, log_path: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self._binary = binary
        self._log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = self._log_path.open("ab")
        self.proc = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", *NO_PERSISTENCE],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Cluster:
    """N server processes on one database and one Redis."""

    tmp: Path
    redis: RedisServer
    db_env: dict[str, str]
    data_dir: Path
    nodes: list[ServerProcess] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def env_for(self, index: int) -> dict[str, str]:
        return {
            **self.db_env,
            **self.extra_env,
            "HOMESERVER_CLUSTER_BUS_URL": self.redis.url,
            "HOMESERVER_CLUSTER_NODE_ID": f"node{index}",
            "HOMESERVER_CLUSTER_LIVENESS_SECONDS": "1.5",
            "HOMESERVER_KNOWLEDGE_ENABLED": "false",  # not available in cluster mode
        }

    def start(self, index: int) -> ServerProcess:
        if index < len(self.nodes):
            self.nodes[index].stop()  # reaps a killed one, closes its pipes
        node = ServerProcess(
            self.data_dir, self.tmp / f"node{index}-{len(self.nodes)}.log", self.env_for(index)
        )
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)
        return node

    def start_all(self, count: int) -> None:
        for i in range(count):
            self.start(i)
        for node in self.nodes:
            node.wait_ready()

    def url(self, index: int) -> str:
        return self.nodes[index].base_url

    def ws(self, index: int) -> str:
        return self.nodes[index].base_url.replace("http://", "ws://") + "/v1/stream"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def register(base_url: str, username: str) -> dict[str, Any]:
    r = httpx.post(
        f"{base_url}/v1/auth/register",
        json={"username": username, "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def auth(user: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def frame(message: str | bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(message)
    return data
