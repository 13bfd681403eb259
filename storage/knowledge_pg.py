"""The PostgreSQL lexical leg of knowledge retrieval: postings and FTS5's bm25.

On SQLite every collection has an FTS5 table (``storage.knowledge``). PostgreSQL
has no FTS5, and its ``ts_rank`` is not bm25, so the PostgreSQL store keeps what
FTS5 keeps, in plain tables (``schema/pg/0013_knowledge_postings.sql``):

- ``knowledge_postings (collection_no, term, chunk_no, tf)``: one row per distinct
  term of a chunk, with its count in the chunk;
- ``knowledge_chunk_lengths (chunk_no, collection_no, tokens)``: each chunk's
  length in tokens;
- ``knowledge_lexical_totals (collection_no, chunks, tokens)``: the collection's
  row count and total length (FTS5's ``xRowCount`` and ``xColumnTotalSize``).

Terms are FTS5's own (``storage.lexical_tokens``: the same tokeniser), and
:func:`bm25_search` computes FTS5's ``bm25()`` (k1 = 1.2, b = 0.75, an IDF of
``ln((N - n + 0.5) / (n + 0.5))`` floored at 1e-6, one summand per query phrase,
the score negated: lower is better) in one SQL statement, so a query finds the
same chunks in the same order on both engines.

One difference: a query word that the tokeniser splits (``foo_bar``) is an FTS5
*phrase* (its tokens adjacent, in order); here its tokens are scored as separate
terms, as if the words were apart. ``protocol.knowledge_text.query_terms`` only
makes such a word from an underscore or a mixed letter/diacritic run, which
natural-language questions rarely contain.

Every write happens in the caller's transaction, beside the chunk rows it
mirrors: a deleted chunk's postings are gone at the same commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.lexical_tokens import term_counts, token_lists

K1 = 1.2
B = 0.75


def add_chunks_txn(
    conn: sqlite3.Connection, collection_no: int, chunks: Sequence[tuple[int, str]]
) -> None:
    """Index ``(chunk_no, text)`` pairs of one collection."""
    if not chunks:
        return
    counted = term_counts([text for _, text in chunks])
    conn.executemany(
        "INSERT INTO knowledge_postings (collection_no, term, chunk_no, tf) VALUES (?, ?, ?, ?)",
        [
            (collection_no, term, chunk_no, tf)
            for (chunk_no, _), (counts, _) in zip(chunks, counted, strict=True)
            for term, tf in counts.items()
        ],
    )
    conn.executemany(
        "INSERT INTO knowledge_chunk_lengths (chunk_no, collection_no, tokens) VALUES (?, ?, ?)",
        [
            (chunk_no, collection_no, length)
            for (chunk_no, _), (_, length) in zip(chunks, counted, strict=True)
        ],
    )
    _adjust_totals(conn, collection_no, len(chunks), sum(length for _, length in counted))


def drop_chunks_txn(conn: sqlite3.Connection, collection_no: int, chunk_nos: Sequence[int]) -> None:
    """Take these chunks (of one collection) out of the index."""
    if not chunk_nos:
        return
    nos = list(chunk_nos)
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM knowledge_chunk_lengths"
        " WHERE chunk_no = ANY(?::bigint[])",
        (nos,),
    ).fetchone()
    conn.execute("DELETE FROM knowledge_postings WHERE chunk_no = ANY(?::bigint[])", (nos,))
    conn.execute("DELETE FROM knowledge_chunk_lengths WHERE chunk_no = ANY(?::bigint[])", (nos,))
    if row is not None and int(row[0]):
        _adjust_totals(conn, collection_no, -int(row[0]), -int(row[1]))


def drop_collection_txn(conn: sqlite3.Connection, collection_no: int) -> None:
    """Remove a whole collection's index."""
    for table in ("knowledge_postings", "knowledge_chunk_lengths", "knowledge_lexical_totals"):
        conn.execute(f"DELETE FROM {table} WHERE collection_no = ?", (collection_no,))


def _adjust_totals(conn: sqlite3.Connection, collection_no: int, chunks: int, tokens: int) -> None:
    conn.execute(
        "INSERT INTO knowledge_lexical_totals (collection_no, chunks, tokens) VALUES (?, ?, ?)"
        " ON CONFLICT (collection_no) DO UPDATE SET"
        " chunks = knowledge_lexical_totals.chunks + excluded.chunks,"
        " tokens = knowledge_lexical_totals.tokens + excluded.tokens",
        (collection_no, chunks, tokens),
    )


def query_tokens(terms: Sequence[str]) -> list[str]:
    """The index terms of query words, one per FTS5 phrase token (duplicates kept:
    two words with one stem are two phrases to FTS5, each adding to the score)."""
    return [token for tokens in token_lists(list(terms)) for token in tokens]


_BM25 = f"""
WITH q AS (SELECT unnest(?::text[]) AS term),
totals AS (
    SELECT chunks::float8 AS n, tokens::float8 / GREATEST(chunks, 1) AS avgdl
    FROM knowledge_lexical_totals WHERE collection_no = ? AND chunks > 0
),
df AS (
    SELECT p.term, COUNT(*)::float8 AS hits FROM knowledge_postings p
    WHERE p.collection_no = ? AND p.term = ANY(?::text[]) GROUP BY p.term
),
idf AS (
    SELECT df.term, GREATEST(ln((totals.n - df.hits + 0.5) / (df.hits + 0.5)), 0) AS raw
    FROM df CROSS JOIN totals
)
SELECT p.chunk_no, -SUM(
    (CASE WHEN idf.raw <= 0 THEN 1e-6 ELSE idf.raw END)
    * (p.tf * {K1 + 1.0!r}) / (p.tf + {K1!r} * ({1 - B!r} + {B!r} * l.tokens / totals.avgdl))
) AS score
FROM q
JOIN idf ON idf.term = q.term
JOIN knowledge_postings p ON p.collection_no = ? AND p.term = q.term
JOIN knowledge_chunk_lengths l ON l.chunk_no = p.chunk_no
CROSS JOIN totals
GROUP BY p.chunk_no
ORDER BY score, p.chunk_no
LIMIT ?
"""


def bm25_search(
    conn: sqlite3.Connection, collection_no: int, terms: Sequence[str], limit: int
) -> list[tuple[int, float]]:
    """``(chunk_no, bm25)`` best first, as FTS5's ``bm25()`` over an OR of ``terms``."""
    tokens = query_tokens(terms)
    if not tokens or limit < 1:
        return []
    rows = conn.execute(
        _BM25, (tokens, collection_no, collection_no, sorted(set(tokens)), collection_no, limit)
    ).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows]
