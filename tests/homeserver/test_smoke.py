from __future__ import annotations

from tests.support import Api


async def test_register_create_send_read(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    room = await api.room(alice, bob)
    sent = await api.send(alice, room, "hello")
    page = await api.ok("GET", f"/v1/rooms/{room}/messages?limit=1", bob)
    assert [e["id"] for e in page["items"]] == [sent["id"]]
    assert page["items"][0]["content"]["body"] == "hello"
