"""FTS5's own tokeniser, outside FTS5: the terms the PostgreSQL postings hold.

The SQLite store indexes knowledge chunks with FTS5 (``porter unicode61
remove_diacritics 2``). The PostgreSQL store keeps postings instead
(``storage.knowledge_pg``), and its terms must be FTS5's terms exactly, or the
same query would find different chunks on the two engines. Rather than a second
implementation of unicode61 case folding, diacritic removal and FTS5's Porter
stemmer, the text goes through the very same tokeniser: an in-memory SQLite
database (one per thread) with an FTS5 table of that tokeniser, read back through
an ``fts5vocab`` ``instance`` table. Nothing is stored there; each call deletes
its rows before returning.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence

TOKENIZE = "porter unicode61 remove_diacritics 2"  # storage.knowledge's FTS5 tables

_local = threading.local()


def _conn() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", check_same_thread=True)
        conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZE}')")
        conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        _local.conn = conn
    return conn


def token_lists(texts: Sequence[str]) -> list[list[str]]:
    """Each text's tokens in order, exactly as FTS5 indexes (and queries) them."""
    if not texts:
        return []
    conn = _conn()
    out: list[list[str]] = [[] for _ in texts]
    try:
        conn.executemany(
            "INSERT INTO t (rowid, text) VALUES (?, ?)", [(n + 1, t) for n, t in enumerate(texts)]
        )
        for doc, term in conn.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
            out[int(doc) - 1].append(str(term))
    finally:
        conn.execute("DELETE FROM t")
        conn.commit()
    return out


def term_counts(texts: Sequence[str]) -> list[tuple[Counter[str], int]]:
    """Per text: its term frequencies and its length in tokens (FTS5's ``xColumnSize``)."""
    return [(Counter(tokens), len(tokens)) for tokens in token_lists(texts)]
