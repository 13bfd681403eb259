"""Shared test harness: start the real server in-process on port 0, talk HTTP to it.

``start_server`` runs ``homeserver.app.run`` in a nursery (the same code path as
``homeserver serve``) with a temporary data directory; ``Api`` is a thin httpx
wrapper that registers users and unwraps the envelope.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from conf import Settings
from conf.cluster import ClusterSettings
from homeserver import app
from storage import db

# The persisted-event fields of CONTRACT section 4, and its ISO-8601 millisecond format.
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT_FIELDS = {
    "type",
    "id",
    "room_id",
    "tenant_id",
    "sender_id",
    "actor_id",
    "content",
    "stream_position",
    "origin_ts",
    "ts",
    "depth",
    "prev_event_ids",
}


def make_settings(data_dir: Path, *, database_url: str | None = None, **overrides: Any) -> Settings:
    """Test settings; ``database_url`` puts the store on PostgreSQL (``[cluster]``)."""
    if database_url is not None:
        overrides.setdefault(
            "cluster",
            ClusterSettings(
                node_id="test",
                database_url=database_url,
                bus_url="",  # no bus: one process on the PostgreSQL store
                read_connections=3,
            ),
        )
    base = Settings(
        host="127.0.0.1",
        port=0,
        data_dir=str(data_dir),
        dev=True,
        db_synchronous="normal",
        log_level="warning",
    )
    return dataclasses.replace(base, **overrides)


@contextmanager
def open_db(running: app.Running) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a running server's store, whichever engine it is."""
    if running.engine == "postgres":
        from storage import pg

        conn = pg.connect(running.database_url, readonly=True)
        try:
            yield pg.as_sqlite(conn)
        finally:
            conn.close()
        return
    sconn = db.connect(running.db_path, readonly=True)
    try:
        yield sconn
    finally:
        sconn.close()


@asynccontextmanager
async def start_server(settings: Settings) -> AsyncIterator[app.Running]:
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(app.run, settings)
        try:
            yield running
        finally:
            nursery.cancel_scope.cancel()


@dataclasses.dataclass
class User:
    participant_id: str
    access_token: str
    refresh_token: str
    username: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def register(self, username: str, password: str = "password123") -> User:
        r = await self.client.post(
            "/v1/auth/register", json={"username": username, "password": password}
        )
        assert r.status_code == 201, r.text
        d = r.json()["data"]
        return User(d["participant_id"], d["access_token"], d["refresh_token"], username)

    async def call(
        self, method: str, path: str, user: User | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers.update(user.auth)
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def ok(
        self, method: str, path: str, user: User | None = None, status: int = 200, **kwargs: Any
    ) -> Any:
        r = await self.call(method, path, user, **kwargs)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        body = r.json()
        assert body["status"] == "ok"
        return body["data"]

    async def room(self, owner: User, *members: User, **body: Any) -> str:
        body.setdefault("name", "room")
        body["initial_members"] = [{"type": "user", "id": m.participant_id} for m in members]
        data = await self.ok("POST", "/v1/rooms", owner, status=201, json=body)
        return str(data["id"])

    async def send(self, user: User, room_id: str, body: str = "hi", **extra: Any) -> Any:
        return await self.ok(
            "POST",
            f"/v1/rooms/{room_id}/send",
            user,
            json={"content": {"msgtype": "swp.text", "body": body}, **extra},
        )


def envelope_ok(r: httpx.Response, status: int) -> Any:
    """The ``data`` of a success envelope, after checking its exact shape."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status", "data", "meta"}, body
    assert body["status"] == "ok"
    assert body["meta"]["request_id"].startswith("req_")
    return body["data"]


def envelope_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` of an error envelope: exact shape, code, a message, no traceback."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status", "error", "meta"}, body
    assert body["status"] == "error"
    assert body["meta"]["request_id"].startswith("req_")
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in r.text
    return error


@asynccontextmanager
async def api_for(running: app.Running) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
        yield Api(client)
