-- 0005: message ordinals keyed by (room, position); totals derived, not stored.
-- One INSERT per message instead of two counter upserts plus an insert into a
-- table with four b-trees: the hot write path touches fewer pages per commit.

DROP TABLE message_totals;

CREATE TABLE message_ordinals_new (
    room_id    TEXT NOT NULL,
    position   INTEGER NOT NULL,
    event_id   TEXT NOT NULL,
    sender_id  TEXT NOT NULL,
    room_seq   INTEGER NOT NULL,
    sender_seq INTEGER NOT NULL,
    redacted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, position)
) WITHOUT ROWID;

INSERT INTO message_ordinals_new
    (room_id, position, event_id, sender_id, room_seq, sender_seq, redacted)
SELECT room_id, position, event_id, sender_id, room_seq, sender_seq, redacted
FROM message_ordinals;

DROP TABLE message_ordinals;

ALTER TABLE message_ordinals_new RENAME TO message_ordinals;

CREATE INDEX message_ordinals_sender ON message_ordinals(room_id, sender_id, position);

CREATE INDEX message_ordinals_redacted ON message_ordinals(room_id, position) WHERE redacted = 1;
