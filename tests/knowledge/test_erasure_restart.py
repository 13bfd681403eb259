"""Erasure (no text left in the database files after a checkpoint; on PostgreSQL, in
no row: its WAL is not scrubbed, README), the bot-deletion hook, and indexing that
survives a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from homeserver.app import Running
from protocol.knowledge import KnowledgeSettings
from tests.knowledge.support import DOCS, FakeBots, docx_bytes, start_server, upload, wait_done
from tests.support import Api, User, api_for, envelope_ok, make_settings, open_db

LOOSE = KnowledgeSettings(score_threshold=0.0)
SECRET = "xylophonequartz"
KEEP = "marigoldharbour"


def grep(running: Running, word: str) -> list[str]:
    """Where ``word`` is stored: SQLite's database files, or PostgreSQL's knowledge rows
    (chunk text, postings and document-frequency terms)."""
    if running.engine == "postgres":
        with open_db(running) as conn:
            return [
                table
                for table, column in (
                    ("knowledge_chunks", "text"),
                    ("knowledge_postings", "term"),
                    ("knowledge_terms", "term"),
                )
                if conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE {column} LIKE ?", (f"%{word}%",)
                ).fetchone()[0]
            ]
    hits = []
    for path in running.db_path.parent.iterdir():
        if path.is_file() and word.encode() in path.read_bytes():
            hits.append(path.name)
    return hits


async def _indexed(api: Api, user: User, bot: str, data: bytes, name: str) -> str:
    doc = envelope_ok(await upload(api, user, bot, data, name), 201)
    assert (await wait_done(api, user, bot, doc["id"]))["status"] == "indexed"
    return str(doc["id"])


async def _scrubbed(running: Running, before: int) -> None:
    with trio.fail_after(30):
        await running.scrubber.wait_scrubs(before + 1)


async def test_deleted_document_leaves_no_text_in_the_database(
    tmp_path: Path, database_url: str | None
) -> None:
    bots = FakeBots()
    async with (
        start_server(make_settings(tmp_path / "d", database_url=database_url), bots) as running,
        api_for(running) as api,
    ):
        alice = await api.register("alice")
        bots.add("bot_a", alice)
        text = f"The {SECRET} protocol is confidential. " * 40
        gone = await _indexed(api, alice, "bot_a", text.encode(), "s.txt")
        await _indexed(api, alice, "bot_a", docx_bytes(f"The {KEEP} stays."), "k.docx")
        assert grep(running, SECRET)  # the test can see it while it is there
        before = running.scrubber.scrubs
        await api.ok("DELETE", DOCS.format(bot="bot_a") + f"/{gone}", alice)
        await _scrubbed(running, before)
        assert grep(running, SECRET) == []
        assert running.knowledge is not None
        kept = await running.knowledge.retriever.retrieve("col_a", KEEP, LOOSE, mode="bm25")
        assert [KEEP in c.text for c in kept] == [True]
        files = list((tmp_path / "d" / "knowledge" / "files").rglob(f"{gone}-*"))
        assert files == []


async def test_replaced_document_old_text_is_erased(
    tmp_path: Path, database_url: str | None
) -> None:
    bots = FakeBots()
    async with (
        start_server(make_settings(tmp_path / "d", database_url=database_url), bots) as running,
        api_for(running) as api,
    ):
        alice = await api.register("alice")
        bots.add("bot_a", alice)
        doc = await _indexed(api, alice, "bot_a", f"Old {SECRET} words.".encode(), "a.txt")
        before = running.scrubber.scrubs
        r = await upload(api, alice, "bot_a", b"New words only.", "b.txt", method="PUT", doc_id=doc)
        envelope_ok(r, 200)
        await wait_done(api, alice, "bot_a", doc)
        await _scrubbed(running, before)
        assert grep(running, SECRET) == []


async def test_bot_deletion_hook_removes_the_collection(
    tmp_path: Path, database_url: str | None
) -> None:
    bots = FakeBots()
    async with (
        start_server(make_settings(tmp_path / "d", database_url=database_url), bots) as running,
        api_for(running) as api,
    ):
        alice = await api.register("alice")
        bot = bots.add("bot_a", alice)
        other = bots.add("bot_b", alice)
        await _indexed(api, alice, "bot_a", f"{SECRET} one.".encode(), "a.txt")
        await _indexed(api, alice, "bot_a", f"{SECRET} two.".encode(), "b.txt")
        await _indexed(api, alice, "bot_b", f"{KEEP} three.".encode(), "c.txt")
        knowledge = running.knowledge
        assert knowledge is not None
        assert await knowledge.collection_exists(bot.collection_id)
        before = running.scrubber.scrubs
        # What the bots service does: the hook inside its bot-deleting transaction.
        await running.writer.write(knowledge.delete_collection_txn, bot)
        assert not await knowledge.collection_exists(bot.collection_id)
        assert await knowledge.retriever.retrieve(bot.collection_id, SECRET, LOOSE) == []
        await _scrubbed(running, before)
        assert grep(running, SECRET) == []
        kept = await knowledge.retriever.retrieve(other.collection_id, KEEP, LOOSE)
        assert len(kept) == 1
        files = tmp_path / "d" / "knowledge" / "files"
        with trio.fail_after(10):
            while len(list(files.iterdir())) != 1:  # noqa: ASYNC110 - the janitor is async
                await trio.sleep(0.02)


@pytest.mark.sqlite_only  # it edits the SQLite file (and its FTS5 table) between runs
async def test_indexing_resumes_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d")
    bots = FakeBots()
    async with start_server(settings, bots) as running, api_for(running) as api:
        alice = await api.register("alice")
        bots.add("bot_a", alice)
        ids = [
            await _indexed(api, alice, "bot_a", f"Resume {word} sentence.".encode(), f"{n}.txt")
            for n, word in enumerate(("pelican", "cormorant", "albatross"))
        ]
        db_path = running.db_path
    # A crash in each stage: left uploaded, extracting (no chunks yet), indexing.
    conn = sqlite3.connect(db_path)
    for doc_id, status in zip(ids, ("uploaded", "extracting", "indexing"), strict=True):
        conn.execute(
            "UPDATE knowledge_documents SET status = ?, indexed_at_ms = NULL WHERE document_id = ?",
            (status, doc_id),
        )
    doc_no = conn.execute(
        "SELECT document_no FROM knowledge_documents WHERE document_id = ?", (ids[1],)
    ).fetchone()[0]
    table = "kfts_1"
    for no, text in conn.execute(
        "SELECT chunk_no, text FROM knowledge_chunks WHERE document_no = ?", (doc_no,)
    ).fetchall():
        conn.execute(
            f"INSERT INTO {table} ({table}, rowid, text) VALUES ('delete', ?, ?)", (no, text)
        )
    conn.execute("DELETE FROM knowledge_chunks WHERE document_no = ?", (doc_no,))
    conn.commit()
    conn.close()
    async with start_server(settings, bots) as running, api_for(running) as api:
        token = await api.ok(
            "POST",
            "/v1/auth/token",
            json={"grant_type": "password", "username": "alice", "password": "password123"},
        )
        alice = User(alice.participant_id, token["access_token"], token["refresh_token"], "alice")
        for doc_id in ids:
            done = await wait_done(api, alice, "bot_a", doc_id)
            assert done["status"] == "indexed"
            assert done["chunk_count"] == 1
        assert running.knowledge is not None
        for word in ("pelican", "cormorant", "albatross"):
            found = await running.knowledge.retriever.retrieve("col_a", word, LOOSE, mode="bm25")
            assert len(found) == 1
            assert word in found[0].text
        conn = sqlite3.connect(db_path)
        assert conn.execute("SELECT COUNT(*) FROM knowledge_chunks").fetchone()[0] == 3
        conn.close()
