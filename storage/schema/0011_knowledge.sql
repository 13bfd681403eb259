-- ScaiBot knowledge (CONTRACT 13). Lands as 0010 on main (the lead renumbers).
--
-- A collection (one per bot, keyed by the bot's collection_id) owns documents;
-- a document owns chunks. Each collection has its own FTS5 table
-- kfts_<collection_no> (created by storage.knowledge when the collection is), an
-- external-content index over knowledge_chunks.text: bm25 statistics are per
-- collection, and dropping a collection drops its whole index.
-- Vectors are float32 blobs beside their chunk, with the model and dimension
-- that made them.

CREATE TABLE knowledge_collections (
    collection_no INTEGER PRIMARY KEY,
    collection_id TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE knowledge_documents (
    document_no INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL UNIQUE,
    collection_no INTEGER NOT NULL REFERENCES knowledge_collections (collection_no),
    name TEXT NOT NULL,
    filename TEXT,
    doc_type TEXT NOT NULL CHECK (doc_type IN ('txt', 'md', 'html', 'pdf', 'docx')),
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL
        CHECK (status IN ('uploaded', 'extracting', 'indexing', 'indexed', 'failed')),
    error TEXT,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    text_chars INTEGER,
    uploaded_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    indexed_at_ms INTEGER
);
CREATE INDEX knowledge_documents_by_collection
    ON knowledge_documents (collection_no, document_no);
CREATE INDEX knowledge_documents_pending
    ON knowledge_documents (status) WHERE status IN ('uploaded', 'extracting', 'indexing');

CREATE TABLE knowledge_chunks (
    chunk_no INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    document_no INTEGER NOT NULL REFERENCES knowledge_documents (document_no),
    collection_no INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    content_key TEXT NOT NULL,
    embed_model TEXT,
    embed_dim INTEGER,
    embedding BLOB
);
CREATE INDEX knowledge_chunks_by_document ON knowledge_chunks (document_no, ordinal);
CREATE INDEX knowledge_chunks_by_collection ON knowledge_chunks (collection_no, chunk_no);

-- Document frequency of each term key (protocol.knowledge_text.term_key) per
-- collection, kept in step with the chunks: retrieval uses it to bound how many
-- chunks FTS5 has to score for one query.
CREATE TABLE knowledge_terms (
    collection_no INTEGER NOT NULL,
    term TEXT NOT NULL,
    df INTEGER NOT NULL,
    PRIMARY KEY (collection_no, term)
) WITHOUT ROWID;
