"""Who may read media, restart survival, and ``homeserver admin media-gc``.

The rule (homeserver.media.service): the uploader always; anyone else only while
joined to a room where a message or edit references the item (or, for a
thumbnail, its original). Everyone else gets the same 404 as an unknown id.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from homeserver import cli
from tests.homeserver.media_support import blob_files, blob_path, media_server, png, upload
from tests.support import Api, User


async def _status(api: Api, user: User, media_id: str) -> tuple[int, int, int]:
    """Status of download, thumbnail and info for this user."""
    codes = []
    for path in (
        f"/v1/media/download/{media_id}",
        f"/v1/media/download/{media_id}/thumbnail",
        f"/v1/media/{media_id}/info",
    ):
        r = await api.call("GET", path, user)
        if r.status_code == 404:
            assert r.json()["error"]["code"] == "SW_MEDIA_NOT_FOUND"
        codes.append(r.status_code)
    return codes[0], codes[1], codes[2]


async def _media_message(api: Api, user: User, room: str, **content: Any) -> dict[str, Any]:
    data: dict[str, Any] = await api.ok(
        "POST",
        f"/v1/rooms/{room}/send",
        user,
        json={"content": {"msgtype": "swp.media", "body": "look", **content}},
    )
    return data


async def test_only_members_of_a_room_that_shares_it_may_read(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    carol = await api.register("carol")
    up = await upload(api, alice, png(300, 200), "p.png", "image/png")
    mid = up["media_id"]
    OK, NONE = (200, 200, 200), (404, 404, 404)
    # Not shared yet: only the uploader.
    assert await _status(api, alice, mid) == OK
    assert await _status(api, bob, mid) == NONE
    room = await api.room(alice, bob)
    await _media_message(api, alice, room, media_id=mid)
    assert await _status(api, bob, mid) == OK  # a member
    assert await _status(api, carol, mid) == NONE  # not a member: as if unknown
    # Thumbnails of shared media are readable by id too.
    r = await api.call("GET", f"/v1/media/download/{up['thumbnail_id']}", bob)
    assert r.status_code == 200
    r = await api.call("GET", f"/v1/media/download/{up['thumbnail_id']}", carol)
    assert r.status_code == 404
    # Carol's own room does not help her.
    other = await api.room(carol)
    await api.send(carol, other, "hello")
    assert await _status(api, carol, mid) == NONE
    # Bob leaves: no longer readable for him; the uploader keeps access.
    await api.ok("POST", f"/v1/rooms/{room}/leave", bob)
    assert await _status(api, bob, mid) == NONE
    assert await _status(api, alice, mid) == OK


async def test_every_reference_shape_counts(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    ids = [(await upload(api, alice, f"file {i}".encode()))["media_id"] for i in range(5)]
    await _media_message(api, alice, room, thumbnail_id=ids[0])
    await _media_message(api, alice, room, attachments=[{"media_id": ids[1]}, {"id": ids[2]}])
    # ScaiGrid form: POST /messages with attachments [{type, id}].
    await api.ok(
        "POST",
        f"/v1/rooms/{room}/messages",
        alice,
        status=201,
        json={"content": "see attached", "attachments": [{"type": "file", "id": ids[3]}]},
    )
    # An edit that adds an attachment.
    event = await api.send(alice, room, "draft")
    await api.ok(
        "POST",
        f"/v1/rooms/{room}/events/{event['id']}/edit",
        alice,
        json={"content": {"msgtype": "swp.media", "body": "final", "media_id": ids[4]}},
    )
    for mid in ids:
        r = await api.call("GET", f"/v1/media/download/{mid}", bob)
        assert r.status_code == 200, mid


async def test_redaction_drops_the_reference(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    mid = (await upload(api, alice, b"secret plan"))["media_id"]
    event = await _media_message(api, alice, room, media_id=mid)
    assert (await api.call("GET", f"/v1/media/download/{mid}", bob)).status_code == 200
    await api.ok("POST", f"/v1/rooms/{room}/events/{event['id']}/redact", alice, json={})
    assert (await api.call("GET", f"/v1/media/download/{mid}", bob)).status_code == 404
    assert (await api.call("GET", f"/v1/media/download/{mid}", alice)).status_code == 200


async def test_media_survives_a_restart(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    async with media_server(tmp_path) as (_, api):
        alice = await api.register("alice")
        token = alice
        up = await upload(api, alice, data, "keep.bin")
        picture = await upload(api, alice, png(640, 480), "p.png", "image/png")
    async with media_server(tmp_path) as (running, api):
        r = await api.call("GET", f"/v1/media/download/{up['media_id']}", token)
        assert r.status_code == 200
        assert r.content == data
        assert hashlib.sha256(r.content).hexdigest() == up["sha256"]
        info = await api.ok("GET", f"/v1/media/{picture['media_id']}/info", token)
        assert info["thumbnail_id"] == picture["thumbnail_id"]
        r = await api.call("GET", f"/v1/media/download/{picture['media_id']}/thumbnail", token)
        assert r.status_code == 200
        # The files are in the data directory, by content address.
        assert blob_path(running.db_path.parent, up["sha256"]).read_bytes() == data


def _gc(data_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = cli.main(["admin", "media-gc", "--data-dir", str(data_dir), *extra])
    assert code == 0
    return capsys.readouterr().out


async def test_media_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    shared_bytes = png(200, 100, (1, 2, 3))
    async with media_server(tmp_path) as (_, api):
        alice = await api.register("alice")
        bob = await api.register("bob")
        room = await api.room(alice, bob)
        kept = await upload(api, alice, shared_bytes, "kept.png", "image/png")
        await _media_message(api, alice, room, media_id=kept["media_id"])
        # Same bytes, never posted: its rows go, the shared files stay.
        twin = await upload(api, bob, shared_bytes, "twin.png", "image/png")
        orphan = await upload(api, alice, b"never posted", "orphan.txt", "text/plain")
        redacted = await upload(api, alice, png(64, 64, (9, 9, 9)), "gone.png", "image/png")
        event = await _media_message(api, alice, room, media_id=redacted["media_id"])
        await api.ok("POST", f"/v1/rooms/{room}/events/{event['id']}/redact", alice, json={})
        # Only the thumbnail of this one is referenced: the original must stay.
        via_thumb = await upload(api, alice, png(90, 90, (7, 7, 7)), "t.png", "image/png")
        await _media_message(api, alice, room, thumbnail_id=via_thumb["thumbnail_id"])
        files_before = blob_files(data_dir)
        await trio.sleep(0.01)

        # Recent uploads are protected by the default minimum age (1 hour).
        out = await trio.to_thread.run_sync(_gc, data_dir, capsys)
        assert "removed 0 media item(s), 0 file(s)" in out
        # A dry run lists, and changes nothing.
        out = await trio.to_thread.run_sync(_gc, data_dir, capsys, "--min-age", "0", "--dry-run")
        gone = {twin["media_id"], orphan["media_id"], redacted["media_id"]}
        gone |= set(twin["thumbnails"].values()) | set(redacted["thumbnails"].values())
        for mid in gone:
            assert f"would remove {mid} " in out
        assert f"would remove {len(gone)} media item(s), 4 file(s)" in out
        assert blob_files(data_dir) == files_before
        # The real run, while the server is up.
        out = await trio.to_thread.run_sync(_gc, data_dir, capsys, "--min-age", "0")
        assert f"removed {len(gone)} media item(s), 4 file(s)" in out
        for mid in gone:
            r = await api.call("GET", f"/v1/media/download/{mid}", alice)
            assert r.status_code == 404
        for up in (kept, via_thumb):
            r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
            assert r.status_code == 200
            r = await api.call("GET", f"/v1/media/download/{up['thumbnail_id']}", bob)
            assert r.status_code == 200
        # Sharing a thumbnail does not share its original.
        r = await api.call("GET", f"/v1/media/download/{via_thumb['media_id']}", bob)
        assert r.status_code == 404
        assert blob_path(data_dir, kept["sha256"]).exists()  # shared with the deleted twin
        assert not blob_path(data_dir, orphan["sha256"]).exists()
        assert not blob_path(data_dir, redacted["sha256"]).exists()
        assert len(blob_files(data_dir)) == len(files_before) - 4
        assert list((data_dir / "media" / "trash").iterdir()) == []
    conn = sqlite3.connect(data_dir / "homeserver.db")
    try:
        rows = conn.execute("SELECT COUNT(*) FROM media").fetchone()[0]
    finally:
        conn.close()
    assert rows == 6  # kept and via_thumb, each with two thumbnails
