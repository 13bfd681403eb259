"""A revoked or expired credential ends the streams opened with it (issue 9, defect 3).

End to end against the in-process server: revoking an API key, a refresh
family (refresh-token reuse), a participant (``homeserver admin
deactivate-participant``, run as a separate "process" on the same data dir), or
an access token reaching its expiry closes every stream opened with it with
4001; room events stop; a ``send`` ordered after the revocation is not stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection

from homeserver import app, cli
from homeserver.app import Running
from homeserver.clock import system_ms
from homeserver.identity import revocation
from storage import participants as pstore
from tests.stream.test_stream_e2e import STEP, hello, open_ws, recv, send_json
from tests.support import Api, User, api_for, envelope_error, make_settings, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    async with start_server(make_settings(tmp_path / "data", rate_limit_messages=0)) as running:
        yield running


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    async with api_for(server) as client:
        yield client


async def closed_with(ws: ClientConnection) -> tuple[list[dict[str, Any]], int, str]:
    """Frames until the close (presence skipped), and the close code and reason."""
    frames: list[dict[str, Any]] = []
    with trio.fail_after(STEP):
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                closed = exc.rcvd
                break
            frame = json.loads(message)
            if frame.get("type") != "presence":
                frames.append(frame)
    assert closed is not None, "no close frame"
    return frames, closed.code, closed.reason


async def history_bodies(api: Api, user: User, room: str) -> list[str]:
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?limit=200", user)
    return [e["content"].get("body") for e in page["items"]]


async def new_key(api: Api, user: User) -> tuple[str, str]:
    data = await api.ok("POST", "/v1/api-keys", user, status=201, json={"name": "bot"})
    return str(data["id"]), str(data["key"])


async def test_deleting_an_api_key_closes_its_open_stream(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    key_id, key = await new_key(api, alice)
    async with open_ws(server, key) as ws, open_ws(server, alice.access_token) as other:
        await hello(ws)
        await hello(other)
        await api.send(bob, room, "before")
        assert (await recv(ws))["content"]["body"] == "before"
        assert (await recv(other))["content"]["body"] == "before"
        await api.ok("DELETE", f"/v1/api-keys/{key_id}", alice)
        frames, code, reason = await closed_with(ws)
        assert (code, reason) == (4001, "SW_AUTH_INVALID_TOKEN")
        assert [f for f in frames if f.get("type") == "swp.room.message"] == []
        # the connection opened with another credential is untouched
        await api.send(bob, room, "after")
        assert (await recv(other))["content"]["body"] == "after"
    assert server.registry.revoked_closes == 1
    r = await api.call("GET", "/v1/me", headers={"Authorization": f"Bearer {key}"})
    envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")


@pytest.mark.parametrize("frame", ["send", "typing"])
async def test_frame_ordered_after_the_revocation_commits_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame: str
) -> None:
    """The revocation commits and nobody tells the registry (the watcher is
    made to sleep for an hour): the stream's next frame is refused by the
    credential check in its own transaction (send) or read (typing), which
    closes it 4001, and nothing is stored."""
    monkeypatch.setattr(revocation, "POLL_INTERVAL", 3600.0)
    settings = make_settings(tmp_path / "data", rate_limit_messages=0)
    async with start_server(settings) as server, api_for(server) as api:
        alice = await api.register("alice")
        room = await api.room(alice)
        key_id, key = await new_key(api, alice)
        async with open_ws(server, key) as ws:
            await hello(ws)

            def revoke(conn: Any) -> bool:
                return pstore.revoke_api_key_txn(
                    conn, key_id=key_id, participant_id=alice.participant_id, now_ms=1
                )

            assert await server.writer.write(revoke)
            body = {"msgtype": "swp.text", "body": "after revocation"}
            payload: dict[str, Any]
            if frame == "send":
                payload = {"type": "send", "req_id": "r1", "room_id": room, "content": body}
            else:
                payload = {"type": "typing", "room_id": room, "typing": True}
            await send_json(ws, payload)
            frames, code, reason = await closed_with(ws)
            assert (code, reason) == (4001, "SW_AUTH_INVALID_TOKEN")
            errors = [f for f in frames if f.get("type") == "error"]
            assert [e["error"]["code"] for e in errors] == ["SW_AUTH_INVALID_TOKEN"]
            assert not [f for f in frames if f.get("type") in ("ack", "typing")]
        assert server.registry.revoked_closes == 0  # the frame check alone closed it
        assert "after revocation" not in await history_bodies(api, alice, room)


async def test_refresh_token_reuse_revokes_the_family_and_closes_its_streams(
    server: Running, api: Api
) -> None:
    alice = await api.register("alice")
    async with open_ws(server, alice.access_token) as ws:
        await hello(ws)
        grant = {"grant_type": "refresh_token", "refresh_token": alice.refresh_token}
        rotated = await api.ok("POST", "/v1/auth/token", json=grant)
        # the rotated pair belongs to the same family; the stream is still fine
        async with open_ws(server, rotated["access_token"]) as second:
            await hello(second)
            # presenting the old refresh token again: theft, the family is revoked
            r = await api.call("POST", "/v1/auth/token", json=grant)
            assert r.status_code == 401
            for stream in (ws, second):
                _, code, reason = await closed_with(stream)
                assert (code, reason) == (4001, "SW_AUTH_INVALID_TOKEN")
    r = await api.call("GET", "/v1/me", alice)
    envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")


async def test_deactivating_a_participant_from_the_cli_closes_their_streams(
    server: Running, api: Api, tmp_path: Path
) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    _, key = await new_key(api, alice)
    async with (
        open_ws(server, alice.access_token) as by_token,
        open_ws(server, key) as by_key,
        open_ws(server, bob.access_token) as bobs,
    ):
        for ws in (by_token, by_key, bobs):
            await hello(ws)
        argv = [
            "admin",
            "deactivate-participant",
            alice.participant_id,
            "--data-dir",
            str(tmp_path / "data"),
        ]
        assert await trio.to_thread.run_sync(cli.main, argv) == 0
        for ws in (by_token, by_key):
            _, code, _ = await closed_with(ws)
            assert code == 4001
        await api.send(bob, room, "still here")
        assert (await recv(bobs))["content"]["body"] == "still here"
    r = await api.call("GET", "/v1/me", alice)
    envelope_error(r, 401, "SW_AUTH_INVALID_TOKEN")
    r = await api.call(
        "POST",
        "/v1/auth/token",
        json={"grant_type": "password", "username": "alice", "password": "password123"},
    )
    assert r.status_code == 401
    async with open_ws(server, key) as ws:
        _, code, _ = await closed_with(ws)
        assert code == 4001


async def test_stream_closes_when_its_access_token_expires(tmp_path: Path) -> None:
    """The server's wall clock is moved to one second before the token expires."""
    offset = [0]

    def clock() -> int:
        return system_ms() + offset[0]

    settings = make_settings(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        server: Running = await nursery.start(partial(app.run, settings, clock=clock))
        async with api_for(server) as api:
            alice = await api.register("alice")
            offset[0] = settings.access_token_ttl * 1000 - 1000
            async with open_ws(server, alice.access_token) as ws:
                await hello(ws)
                _, code, reason = await closed_with(ws)
                assert (code, reason) == (4001, "SW_AUTH_EXPIRED_TOKEN")
            r = await api.call("GET", "/v1/me", alice)
            envelope_error(r, 401, "SW_AUTH_EXPIRED_TOKEN")
        nursery.cancel_scope.cancel()


def test_token_key_is_the_stored_hash() -> None:
    """Registry keys (Principal.token_key) and the revocation log use the same hash."""
    assert pstore.secret_hash("swk_x") == hashlib.sha256(b"swk_x").hexdigest()


async def test_long_poll_waiting_across_a_revocation_gets_401_not_events(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    key_id, key = await new_key(api, alice)
    start = (await api.ok("GET", "/v1/sync?timeout=0", alice))["next_cursor"]
    result: dict[str, Any] = {}

    async def poll() -> None:
        r = await api.call(
            "GET",
            f"/v1/sync?since={start}&timeout=20000",
            headers={"Authorization": f"Bearer {key}"},
        )
        result["status"] = r.status_code
        result["body"] = r.text

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.2)  # the poll is waiting (if not, it still must not see the event)
        await api.ok("DELETE", f"/v1/api-keys/{key_id}", alice)
        await api.send(bob, room, "secret after revocation")
    assert result["status"] == 401, result
    assert "secret after revocation" not in result["body"]
