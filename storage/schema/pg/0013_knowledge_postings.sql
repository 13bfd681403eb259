-- The lexical index of knowledge chunks on PostgreSQL (storage/knowledge_pg.py):
-- what an FTS5 table holds for bm25, in plain tables. Terms are FTS5's own
-- (storage/lexical_tokens.py). Written and deleted in the transaction that
-- writes or deletes the chunk (storage/knowledge.py).

-- One row per distinct term of a chunk; tf: how often it occurs in the chunk.
CREATE TABLE knowledge_postings (
    collection_no BIGINT NOT NULL,
    term TEXT NOT NULL,
    chunk_no BIGINT NOT NULL,
    tf INTEGER NOT NULL,
    PRIMARY KEY (collection_no, term, chunk_no)
);
CREATE INDEX knowledge_postings_by_chunk ON knowledge_postings (chunk_no);

-- Each chunk's length in tokens (FTS5's xColumnSize).
CREATE TABLE knowledge_chunk_lengths (
    chunk_no BIGINT PRIMARY KEY,
    collection_no BIGINT NOT NULL,
    tokens INTEGER NOT NULL
);
CREATE INDEX knowledge_chunk_lengths_by_collection ON knowledge_chunk_lengths (collection_no);

-- Per collection: chunks indexed and their total length (xRowCount, xColumnTotalSize).
CREATE TABLE knowledge_lexical_totals (
    collection_no BIGINT PRIMARY KEY,
    chunks BIGINT NOT NULL,
    tokens BIGINT NOT NULL
);
