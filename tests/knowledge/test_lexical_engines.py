"""The bm25 leg is the same on both engines: FTS5 on SQLite, postings on PostgreSQL
(storage.knowledge_pg) give the same chunks, in the same order, with the same scores,
before and after deletions; and erasure leaves no posting behind."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from protocol.knowledge_text import query_terms
from storage import db, knowledge, migrate, pg
from storage.db import atomic
from storage.lexical_tokens import token_lists

CORPUS = {
    "doc_a": [
        "The heron clinic opens on Mondays and the herons are fed at noon.",
        "Running the clinic takes three volunteers; runners bring the fish.",
        "Café hours: the café opens early, serving naïve visitors espresso.",
    ],
    "doc_b": [
        "Osprey nests are counted every spring by the volunteers.",
        "The osprey population grew; counting ospreys is slow work in the rain, "
        "slow and wet work, and the counters run out of pencils often.",
    ],
    "doc_c": [
        "Pelican feeding schedule: pelicans eat fish twice a day at the harbour.",
        "Harbour rules: no running on the pier, no feeding the gulls.",
        "Gull colonies near the harbour are noisy.",
        "Volunteers meet at the harbour café on Fridays.",
    ],
}
QUERIES = [
    "heron clinic",
    "when does the cafe open",
    "running runners",
    "osprey count volunteers",
    "harbour feeding fish",
    "naive visitors",
    "Gulls",
    "nothing matches xylophone",
]


def _load(conn: sqlite3.Connection) -> None:
    with atomic(conn):
        number = knowledge.ensure_collection_txn(conn, "col_x", 1)
        for n, (doc_id, texts) in enumerate(CORPUS.items()):
            doc = knowledge.Document(
                document_no=0, document_id=doc_id, collection_id="col_x", collection_no=number,
                name=doc_id, filename=None, doc_type="txt", size=1, sha256="0" * 64,
                generation=1, status="indexing", error=None, chunk_count=0, text_chars=None,
                uploaded_by="p", created_at_ms=n, updated_at_ms=n, indexed_at_ms=None,
            )  # fmt: skip
            knowledge.insert_document_txn(conn, doc)
            chunks = [
                knowledge.NewChunk(f"{doc_id}_{i}", text, f"k{doc_id}{i}", None)
                for i, text in enumerate(texts)
            ]
            assert knowledge.store_chunks_txn(
                conn, doc_id, 1, chunks, embed_model=None, embed_dim=None, text_chars=1, now_ms=n
            )


def _ranked(conn: sqlite3.Connection) -> list[list[tuple[str, float]]]:
    number = knowledge.collection_no(conn, "col_x")
    assert number is not None
    out = []
    for query in QUERIES:
        hits = knowledge.bm25_search(conn, number, query_terms(query), 50)
        rows = knowledge.chunks_by_no(conn, [no for no, _ in hits])
        out.append([(rows[no].chunk_id, round(score, 9)) for no, score in hits])
    return out


@pytest.fixture
def both(pg_url: str) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    lite = db.connect(":memory:")
    migrate.migrate(lite)
    postgres = pg.connect(pg_url)
    try:
        yield lite, pg.as_sqlite(postgres)
    finally:
        lite.close()
        postgres.close()


def test_same_hits_same_order_same_scores_on_both_engines(
    both: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    lite, postgres = both
    for conn in both:
        _load(conn)
    expected = _ranked(lite)
    assert [len(hits) for hits in expected] == [2, 3, 3, 4, 5, 1, 2, 0]  # the corpus is live
    assert expected[0][0][0] == "doc_a_0"  # both words, short chunk
    assert _ranked(postgres) == expected
    # Deleting a document changes N, avgdl and the IDFs: still the same on both.
    for conn in both:
        doc = knowledge.get_document(conn, "doc_a")
        assert doc is not None
        with atomic(conn):
            knowledge.delete_document_txn(conn, doc)
    expected = _ranked(lite)
    assert expected[0] == []  # the heron chunks are gone at commit
    assert _ranked(postgres) == expected


def test_postings_leave_with_their_chunks_and_collection(pg_url: str) -> None:
    raw = pg.connect(pg_url)
    conn = pg.as_sqlite(raw)
    try:
        _load(conn)
        count = "SELECT COUNT(*) FROM knowledge_postings WHERE term = 'heron'"
        assert conn.execute(count).fetchone()[0] == 1
        doc = knowledge.get_document(conn, "doc_a")
        assert doc is not None
        with atomic(conn):
            knowledge.delete_document_txn(conn, doc)
        assert conn.execute(count).fetchone()[0] == 0
        totals = conn.execute("SELECT chunks, tokens FROM knowledge_lexical_totals").fetchone()
        lengths = conn.execute(
            "SELECT COUNT(*), SUM(tokens) FROM knowledge_chunk_lengths"
        ).fetchone()
        assert (totals[0], totals[1]) == (lengths[0], lengths[1]) == (6, lengths[1])
        with atomic(conn):
            knowledge.delete_collection_txn(conn, "col_x")
        for table in ("knowledge_postings", "knowledge_chunk_lengths", "knowledge_lexical_totals"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    finally:
        raw.close()


def test_terms_are_fts5_terms() -> None:
    """The postings tokeniser is FTS5's: stems, folds case and strips diacritics alike."""
    assert token_lists(["Running CAFÉS naïvely", "foo_bar x"]) == [
        ["run", "cafe", "naiv"],
        ["foo", "bar", "x"],
    ]
