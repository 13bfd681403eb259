"""Knowledge documents, chunks, vectors and per-collection FTS5 indexes.

Every chunk write or delete goes through here so its FTS5 index stays in step:
the index is external-content (``content='knowledge_chunks'``), so a chunk
leaves it by the FTS5 ``'delete'`` command with its old text, in the same
transaction that deletes the row: it is gone from retrieval at commit.

Erasure: FTS5 keeps deleted terms in old index segments until they are merged,
so :func:`optimize_txn` (run after deletes) rewrites the collection's index into
one segment; with ``secure_delete`` on, the freed pages are zeroed. Dropping a
collection drops its FTS5 table and all its shadow tables.

On PostgreSQL (``storage.pg``) there is no FTS5: the same functions keep
postings instead (``storage.knowledge_pg``, FTS5's tokeniser and bm25), in the
same transactions, so the API and the ranking are the same on both engines.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocol.knowledge_text import fts_match, index_term_keys
from storage import knowledge_pg

PENDING = ("uploaded", "extracting", "indexing")


@dataclass(frozen=True, slots=True)
class Document:
    document_no: int
    document_id: str
    collection_id: str
    collection_no: int
    name: str
    filename: str | None
    doc_type: str
    size: int
    sha256: str
    generation: int
    status: str
    error: str | None
    chunk_count: int
    text_chars: int | None
    uploaded_by: str
    created_at_ms: int
    updated_at_ms: int
    indexed_at_ms: int | None


@dataclass(frozen=True, slots=True)
class NewChunk:
    chunk_id: str
    text: str
    content_key: str
    embedding: bytes | None


@dataclass(frozen=True, slots=True)
class ChunkRow:
    chunk_no: int
    chunk_id: str
    document_id: str
    text: str
    content_key: str


_DOC_SELECT = """
SELECT d.*, c.collection_id FROM knowledge_documents d
JOIN knowledge_collections c ON c.collection_no = d.collection_no
"""


def _doc(row: sqlite3.Row) -> Document:
    return Document(**{f: row[f] for f in Document.__dataclass_fields__})


def fts_table(collection_no: int) -> str:
    return f"kfts_{int(collection_no)}"


def _on_postgres(conn: sqlite3.Connection) -> bool:
    return getattr(conn, "dialect", "sqlite") == "postgres"


# --------------------------------------------------------------- collections


def collection_no(conn: sqlite3.Connection, collection_id: str) -> int | None:
    row = conn.execute(
        "SELECT collection_no FROM knowledge_collections WHERE collection_id = ?",
        (collection_id,),
    ).fetchone()
    return None if row is None else int(row[0])


def ensure_collection_txn(conn: sqlite3.Connection, collection_id: str, now_ms: int) -> int:
    """The collection's number, creating the collection and its FTS5 table if new."""
    found = collection_no(conn, collection_id)
    if found is not None:
        return found
    row = conn.execute(
        "INSERT INTO knowledge_collections (collection_id, created_at_ms) VALUES (?, ?)"
        " RETURNING collection_no",
        (collection_id, now_ms),
    ).fetchone()
    number = int(row[0])
    if _on_postgres(conn):
        return number  # its postings need no table of their own
    conn.execute(
        f"CREATE VIRTUAL TABLE {fts_table(number)} USING fts5(text, content='knowledge_chunks', "
        "content_rowid='chunk_no', tokenize='porter unicode61 remove_diacritics 2')"
    )
    return number


def delete_collection_txn(conn: sqlite3.Connection, collection_id: str) -> list[Document]:
    """Delete a collection with every document, chunk, vector and its index.
    Returns the documents that were in it (their files are the caller's)."""
    number = collection_no(conn, collection_id)
    if number is None:
        return []
    docs = [
        _doc(r)
        for r in conn.execute(_DOC_SELECT + " WHERE d.collection_no = ?", (number,)).fetchall()
    ]
    if _on_postgres(conn):
        knowledge_pg.drop_collection_txn(conn, number)
    else:
        conn.execute(f"DROP TABLE IF EXISTS {fts_table(number)}")
    conn.execute("DELETE FROM knowledge_chunks WHERE collection_no = ?", (number,))
    conn.execute("DELETE FROM knowledge_terms WHERE collection_no = ?", (number,))
    conn.execute("DELETE FROM knowledge_documents WHERE collection_no = ?", (number,))
    conn.execute("DELETE FROM knowledge_collections WHERE collection_no = ?", (number,))
    return docs


def optimize_txn(conn: sqlite3.Connection, collection_id: str) -> None:
    """Merge the collection's index into one segment, dropping deleted terms."""
    number = collection_no(conn, collection_id)
    if number is not None and not _on_postgres(conn):  # postings have no segments
        table = fts_table(number)
        conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")


# ----------------------------------------------------------------- documents


def insert_document_txn(conn: sqlite3.Connection, doc: Document) -> None:
    conn.execute(
        "INSERT INTO knowledge_documents (document_id, collection_no, name, filename, doc_type,"
        " size, sha256, generation, status, error, chunk_count, text_chars, uploaded_by,"
        " created_at_ms, updated_at_ms, indexed_at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            doc.document_id,
            doc.collection_no,
            doc.name,
            doc.filename,
            doc.doc_type,
            doc.size,
            doc.sha256,
            doc.generation,
            doc.status,
            doc.error,
            doc.chunk_count,
            doc.text_chars,
            doc.uploaded_by,
            doc.created_at_ms,
            doc.updated_at_ms,
            doc.indexed_at_ms,
        ),
    )


def count_documents(conn: sqlite3.Connection, collection_no_: int) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM knowledge_documents WHERE collection_no = ?", (collection_no_,)
    ).fetchone()
    return int(row[0])


def get_document(
    conn: sqlite3.Connection, document_id: str, collection_id: str | None = None
) -> Document | None:
    row = conn.execute(_DOC_SELECT + " WHERE d.document_id = ?", (document_id,)).fetchone()
    if row is None:
        return None
    doc = _doc(row)
    if collection_id is not None and doc.collection_id != collection_id:
        return None
    return doc


def list_documents(
    conn: sqlite3.Connection, collection_id: str, *, after_no: int, limit: int
) -> list[Document]:
    rows = conn.execute(
        _DOC_SELECT + " WHERE c.collection_id = ? AND d.document_no > ?"
        " ORDER BY d.document_no LIMIT ?",
        (collection_id, after_no, limit),
    ).fetchall()
    return [_doc(r) for r in rows]


def pending_documents(conn: sqlite3.Connection) -> list[Document]:
    """Documents whose indexing had not finished (resumed at start-up)."""
    rows = conn.execute(
        _DOC_SELECT + " WHERE d.status IN ('uploaded', 'extracting', 'indexing')"
        " ORDER BY d.document_no"
    ).fetchall()
    return [_doc(r) for r in rows]


def _drop_chunks(conn: sqlite3.Connection, document_no: int, collection_no_: int) -> int:
    rows = conn.execute(
        "SELECT chunk_no, text FROM knowledge_chunks WHERE document_no = ?", (document_no,)
    ).fetchall()
    if _on_postgres(conn):
        knowledge_pg.drop_chunks_txn(conn, collection_no_, [int(r[0]) for r in rows])
    elif rows:
        table = fts_table(collection_no_)
        conn.executemany(
            f"INSERT INTO {table} ({table}, rowid, text) VALUES ('delete', ?, ?)",
            [(r[0], r[1]) for r in rows],
        )
    conn.execute("DELETE FROM knowledge_chunks WHERE document_no = ?", (document_no,))
    _count_terms(conn, collection_no_, (r[1] for r in rows), -1)
    return len(rows)


def _count_terms(
    conn: sqlite3.Connection, collection_no_: int, texts: Iterable[str], sign: int
) -> None:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(index_term_keys(text))
    if not counts:
        return
    conn.executemany(
        "INSERT INTO knowledge_terms (collection_no, term, df) VALUES (?, ?, ?)"
        " ON CONFLICT (collection_no, term) DO UPDATE SET df = knowledge_terms.df + excluded.df",
        [(collection_no_, term, sign * n) for term, n in counts.items()],
    )
    if sign < 0:
        conn.executemany(
            "DELETE FROM knowledge_terms WHERE collection_no = ? AND term = ? AND df <= 0",
            [(collection_no_, term) for term in counts],
        )


def term_dfs(conn: sqlite3.Connection, collection_no_: int, keys: Sequence[str]) -> dict[str, int]:
    """Document frequencies of these term keys in the collection (absent: 0)."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    rows = conn.execute(
        f"SELECT term, df FROM knowledge_terms WHERE collection_no = ? AND term IN ({marks})",
        (collection_no_, *keys),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def delete_document_txn(conn: sqlite3.Connection, doc: Document) -> None:
    """Delete a document with its chunks (out of its index in this transaction)."""
    _drop_chunks(conn, doc.document_no, doc.collection_no)
    conn.execute("DELETE FROM knowledge_documents WHERE document_no = ?", (doc.document_no,))


def replace_document_txn(
    conn: sqlite3.Connection,
    doc: Document,
    *,
    name: str,
    filename: str | None,
    doc_type: str,
    size: int,
    sha256: str,
    now_ms: int,
) -> int:
    """Swap in a new file: drop the old chunks, bump the generation, status ``uploaded``.
    Returns the new generation."""
    _drop_chunks(conn, doc.document_no, doc.collection_no)
    generation = doc.generation + 1
    conn.execute(
        "UPDATE knowledge_documents SET name = ?, filename = ?, doc_type = ?, size = ?,"
        " sha256 = ?, generation = ?, status = 'uploaded', error = NULL, chunk_count = 0,"
        " text_chars = NULL, updated_at_ms = ?, indexed_at_ms = NULL WHERE document_no = ?",
        (name, filename, doc_type, size, sha256, generation, now_ms, doc.document_no),
    )
    return generation


def set_status_txn(
    conn: sqlite3.Connection,
    document_id: str,
    generation: int,
    status: str,
    now_ms: int,
    error: str | None = None,
) -> bool:
    """Move a document (still at ``generation``) to ``status``; False if it changed."""
    cur = conn.execute(
        "UPDATE knowledge_documents SET status = ?, error = ?, updated_at_ms = ?"
        " WHERE document_id = ? AND generation = ?",
        (status, error, now_ms, document_id, generation),
    )
    return cur.rowcount == 1


def store_chunks_txn(
    conn: sqlite3.Connection,
    document_id: str,
    generation: int,
    chunks: Sequence[NewChunk],
    *,
    embed_model: str | None,
    embed_dim: int | None,
    text_chars: int,
    now_ms: int,
) -> bool:
    """Index a document's chunks and mark it ``indexed``; False (nothing written) when
    the document was deleted or replaced meanwhile."""
    doc = get_document(conn, document_id)
    if doc is None or doc.generation != generation:
        return False
    _drop_chunks(conn, doc.document_no, doc.collection_no)  # a resumed run starts clean
    table = fts_table(doc.collection_no)
    postgres = _on_postgres(conn)
    written: list[tuple[int, str]] = []
    for ordinal, chunk in enumerate(chunks):
        row = conn.execute(
            "INSERT INTO knowledge_chunks (chunk_id, document_no, collection_no, ordinal, text,"
            " content_key, embed_model, embed_dim, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING chunk_no",
            (
                chunk.chunk_id,
                doc.document_no,
                doc.collection_no,
                ordinal,
                chunk.text,
                chunk.content_key,
                embed_model if chunk.embedding is not None else None,
                embed_dim if chunk.embedding is not None else None,
                chunk.embedding,
            ),
        ).fetchone()
        if postgres:
            written.append((int(row[0]), chunk.text))
        else:
            conn.execute(f"INSERT INTO {table} (rowid, text) VALUES (?, ?)", (row[0], chunk.text))
    if postgres:
        knowledge_pg.add_chunks_txn(conn, doc.collection_no, written)
    _count_terms(conn, doc.collection_no, (c.text for c in chunks), 1)
    conn.execute(
        "UPDATE knowledge_documents SET status = 'indexed', error = NULL, chunk_count = ?,"
        " text_chars = ?, updated_at_ms = ?, indexed_at_ms = ? WHERE document_no = ?",
        (len(chunks), text_chars, now_ms, now_ms, doc.document_no),
    )
    return True


# ----------------------------------------------------------------- retrieval


def bm25_search(
    conn: sqlite3.Connection, collection_no_: int, terms: Sequence[str], limit: int
) -> list[tuple[int, float]]:
    """``(chunk_no, bm25)`` best first for an OR of the query ``terms``
    (``protocol.knowledge_text.query_terms``); bm25 is negative, lower is better."""
    if _on_postgres(conn):
        return knowledge_pg.bm25_search(conn, collection_no_, terms, limit)
    match = fts_match(list(terms))
    if match is None:
        return []
    table = fts_table(collection_no_)
    rows = conn.execute(
        f"SELECT rowid, bm25({table}) AS score FROM {table} WHERE {table} MATCH ?"
        " ORDER BY score LIMIT ?",
        (match, limit),
    ).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows]


def collection_vectors(
    conn: sqlite3.Connection, collection_no_: int, model: str, dim: int
) -> tuple[list[int], bytes]:
    """Chunk numbers and their concatenated float32 vectors made by ``model`` at ``dim``."""
    rows = conn.execute(
        "SELECT chunk_no, embedding FROM knowledge_chunks WHERE collection_no = ?"
        " AND embed_model = ? AND embed_dim = ? ORDER BY chunk_no",
        (collection_no_, model, dim),
    ).fetchall()
    return [int(r[0]) for r in rows], b"".join(r[1] for r in rows)


def chunks_by_no(conn: sqlite3.Connection, chunk_nos: Sequence[int]) -> dict[int, ChunkRow]:
    """The chunks that still exist among ``chunk_nos``."""
    found: dict[int, ChunkRow] = {}
    for start in range(0, len(chunk_nos), 500):
        part = list(chunk_nos[start : start + 500])
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            "SELECT k.chunk_no, k.chunk_id, d.document_id, k.text, k.content_key"
            " FROM knowledge_chunks k JOIN knowledge_documents d ON d.document_no = k.document_no"
            f" WHERE k.chunk_no IN ({marks})",
            part,
        ).fetchall()
        for r in rows:
            found[int(r[0])] = ChunkRow(int(r[0]), r[1], r[2], r[3], r[4])
    return found
