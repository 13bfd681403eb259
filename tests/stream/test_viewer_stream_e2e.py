"""Stream frames from a viewer (issue 9, defect 2): ``typing: true`` and ``send`` are 403."""

from __future__ import annotations

from homeserver.app import Running
from tests.stream.test_stream_e2e import hello, open_ws, recv_type, send_json
from tests.support import Api


async def test_viewer_typing_and_send_frames_are_refused(server: Running, api: Api) -> None:
    alice = await api.register("alice")
    vic = await api.register("vic")
    room = await api.room(alice)
    await api.ok(
        "POST",
        f"/v1/rooms/{room}/members",
        alice,
        status=201,
        json={"type": "user", "id": vic.participant_id, "role": "viewer"},
    )
    async with open_ws(server, vic.access_token) as ws, open_ws(server, alice.access_token) as a:
        await hello(ws)
        await hello(a)
        await send_json(ws, {"type": "typing", "room_id": room, "typing": True})
        error = await recv_type(ws, "error")
        assert error["error"]["code"] == "SW_ROOM_FORBIDDEN"
        await send_json(
            ws,
            {"type": "send", "req_id": "s1", "room_id": room, "content": {"msgtype": "swp.text"}},
        )
        error = await recv_type(ws, "error")
        assert (error["req_id"], error["error"]["code"]) == ("s1", "SW_ROOM_FORBIDDEN")
        # typing:false is accepted: no error before the pong (frames are handled in order)
        await send_json(ws, {"type": "typing", "room_id": room, "typing": False})
        await send_json(ws, {"type": "ping"})
        assert (await recv_type(ws, "pong", "error"))["type"] == "pong"
        # a member still types, and the viewer sees it
        await send_json(a, {"type": "typing", "room_id": room, "typing": True})
        typing = await recv_type(ws, "typing")
        assert typing["participant_id"] == alice.participant_id
