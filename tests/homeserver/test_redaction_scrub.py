"""Redacted text leaves every file in the data directory while the server runs.

On PostgreSQL the guarantee is weaker, and explicitly so (README, cluster mode): the
rows are erased, but nothing scrubs PostgreSQL's WAL; the scrub request is a no-op.
"""

from __future__ import annotations

import trio

from homeserver.app import Running
from homeserver.store.postgres import NoScrub
from tests.support import Api, open_db


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
    if server.engine == "postgres":
        assert isinstance(server.scrubber, NoScrub)
        assert server.scrubber.requests == 1
        with open_db(server) as conn:
            stored = [r[0] for r in conn.execute("SELECT content FROM events").fetchall()]
        assert not [c for c in stored if any(text in c for text in secrets)]
    else:
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
