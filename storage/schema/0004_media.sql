-- 0004: uploaded media (content-addressed files on disk) and which events reference them.

-- One row per upload and per thumbnail. The bytes live on disk at
-- <data_dir>/media/<sha256[0:2]>/<sha256[2:4]>/<sha256>; rows with the same
-- sha256 share one file. A thumbnail row names its original in parent_id.
CREATE TABLE media (
    media_id      TEXT PRIMARY KEY,
    uploader_id   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mime_type     TEXT NOT NULL,
    filename      TEXT,                      -- sanitised client file name
    width         INTEGER,
    height        INTEGER,
    parent_id     TEXT,                      -- the original, for a thumbnail
    thumb_kind    TEXT,                      -- 'fit320' | 'crop96' for a thumbnail
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX media_sha256 ON media(sha256);
CREATE UNIQUE INDEX media_thumbs ON media(parent_id, thumb_kind) WHERE parent_id IS NOT NULL;
CREATE INDEX media_gc ON media(created_at_ms) WHERE parent_id IS NULL;

-- Every (media, room, event) where a message or edit event's content names a
-- media id (content.media_id, content.thumbnail_id, content.attachments[*]).
-- Filled when the event is appended, emptied for an event when it is redacted.
CREATE TABLE media_refs (
    media_id TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (media_id, room_id, event_id)
) WITHOUT ROWID;
CREATE INDEX media_refs_event ON media_refs(event_id);
