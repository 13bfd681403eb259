-- 0012: the stream head. Every event's stream_position is taken from this row
-- inside the transaction that appends it (UPDATE ... RETURNING), so the row
-- lock (PostgreSQL) or the write lock (SQLite's BEGIN IMMEDIATE) is held until
-- COMMIT: positions are handed out in commit order, and a job rolled back to
-- its savepoint gives its numbers back. No holes, on either engine, across any
-- number of writing processes (a sequence or AUTOINCREMENT gives neither).

CREATE TABLE stream_head (
    stream   TEXT PRIMARY KEY,                 -- 'events': the server-wide event stream
    position INTEGER NOT NULL                  -- the last position handed out (committed)
) WITHOUT ROWID;

INSERT INTO stream_head (stream, position)
SELECT 'events', COALESCE(MAX(stream_position), 0) FROM events;
