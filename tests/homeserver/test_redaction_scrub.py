"""Redacted text leaves every file in the data directory while the server runs."""

from __future__ import annotations

import trio

from homeserver.app import Running
from tests.support import Api


async def test_redacted_text_is_scrubbed_from_wal_while_running(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    room = await api.room(alice)
    secrets = [f"SCRUB-ME-{n}-q8Zk3" for n in range(3)]
    sent = await api.send(alice, room, secrets[0])
    for text in secrets[1:]:
        await api.ok(
            "POST",
            f"/v1/rooms/{room}/events/{sent['id']}/edit",
            alice,
            json={"content": {"msgtype": "swp.text", "body": text}},
        )
    await api.send(alice, room, "after")  # the chain goes on past the redacted event
    before = server.scrubber.scrubs
    await api.ok("POST", f"/v1/rooms/{room}/events/{sent['id']}/redact", alice, json={})
    with trio.fail_after(15):
        await server.scrubber.wait_scrubs(before + 1)
    for path in server.db_path.parent.iterdir():
        data = path.read_bytes()
        for text in secrets:
            assert text.encode() not in data, f"{text} found in {path.name}"
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?direction=forward&limit=200", alice)
    ids = [e["id"] for e in page["items"]]
    assert sent["id"] in ids
    redacted = next(e for e in page["items"] if e["id"] == sent["id"])
    assert redacted["content"] == {}
    assert redacted["redacted_at"] is not None
