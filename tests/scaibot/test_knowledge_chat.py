"""ScaiBot with its real knowledge index wired in (issues 12 + 13, CONTRACT 13):
a document uploaded to a bot is retrieved in its chat turn, numbered ``[^n]`` in the
prompt, cited with ``citation`` events, stored in the transcript; deleting the bot
removes its knowledge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.knowledge.support import upload, wait_done
from tests.scaibot.support import BASE, Stream, read_events
from tests.support import Api, User, api_for, make_settings, start_server

FACTS = (
    "Refunds are paid back to the original card within fourteen business days.\n\n"
    "Our office in Utrecht opens at nine in the morning on weekdays."
)


async def _chat(api: Api, who: User, body: dict[str, Any]) -> Stream:
    async with api.client.stream("POST", f"{BASE}/chat", json=body, headers=who.auth) as r:
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        return Stream(r.status_code, r.headers, [e async for e in read_events(r)])


async def test_documents_feed_the_chat_turn_and_leave_with_the_bot(tmp_path: Path) -> None:
    async with start_server(make_settings(tmp_path / "data")) as running, api_for(running) as api:
        owner = await api.register("owner")
        bot = await api.ok(
            "POST",
            f"{BASE}/bots",
            owner,
            status=201,
            json={
                "name": "Support",
                "slug": "support",
                "model": "dev/echo",
                "knowledge_enabled": True,
                "knowledge_settings": {"score_threshold": 0.0, "top_k": 2},
            },
        )
        r = await upload(api, owner, bot["id"], FACTS.encode(), "facts.txt", "Facts")
        assert r.status_code == 201, r.text
        doc = r.json()["data"]
        assert (await wait_done(api, owner, bot["id"], doc["id"]))["status"] == "indexed"

        stream = await _chat(
            api, owner, {"bot_id": bot["id"], "message": "How long do refunds take?"}
        )
        names = stream.names()
        assert names[0] == "start", names
        assert names[-1] == "done", names
        citations = stream.all("citation")
        assert citations, names  # dev/echo cites one marker per chunk it was given
        assert citations[0]["marker"] == "1"
        assert citations[0]["document_id"] == doc["id"]
        assert "[^1]" in stream.text
        cnv = stream.first("start")["conversation_id"]
        transcript = await api.ok("GET", f"{BASE}/conversations/{cnv}", owner)
        answer = transcript["messages"][-1]
        assert answer["role"] == "assistant"
        assert answer["citations"][0]["document_id"] == doc["id"]

        assert answer["retrieved_chunks"], answer  # the chunks are kept in the transcript...
        await api.ok("DELETE", f"{BASE}/bots/{bot['id']}/documents/{doc['id']}", owner)
        kept = (await api.ok("GET", f"{BASE}/conversations/{cnv}", owner))["messages"][-1]
        assert not kept["retrieved_chunks"]  # ...until their document is deleted
        assert kept["citations"][0]["document_id"] == doc["id"]
        assert "snippet" not in kept["citations"][0]
        r = await api.call("DELETE", f"{BASE}/bots/{bot['id']}", owner)
        assert r.status_code == 204, r.text
        r = await api.call("GET", f"{BASE}/bots/{bot['id']}/documents/{doc['id']}", owner)
        assert r.status_code == 404
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("homeserver.db*"))
    assert b"fourteen business days" not in raw
