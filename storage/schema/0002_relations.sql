-- 0002: reactions, read markers, and the counters that make unread counts O(log n).

-- One row per live reaction: (target, sender, emoji) is unique. Removing a
-- reaction deletes the row and appends a 'remove' reaction event.
CREATE TABLE reactions (
    target_event_id TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    emoji           TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,            -- the reaction event that added it
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (target_event_id, sender_id, emoji)
) WITHOUT ROWID;

-- Every message event's ordinal in its room and among its sender's messages
-- there. unread = (room total - room ordinal at the marker)
--              - (own total - own ordinal at the marker)
--              - others' redacted messages after the marker.
CREATE TABLE message_ordinals (
    event_id   TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    sender_id  TEXT NOT NULL,
    position   INTEGER NOT NULL,
    room_seq   INTEGER NOT NULL,
    sender_seq INTEGER NOT NULL,
    redacted   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX message_ordinals_room ON message_ordinals(room_id, position);
CREATE INDEX message_ordinals_sender ON message_ordinals(room_id, sender_id, position);
CREATE INDEX message_ordinals_redacted ON message_ordinals(room_id, position) WHERE redacted = 1;

CREATE TABLE message_totals (
    room_id   TEXT NOT NULL,
    sender_id TEXT NOT NULL,                  -- '' holds the room's total
    messages  INTEGER NOT NULL,
    PRIMARY KEY (room_id, sender_id)
) WITHOUT ROWID;

CREATE TABLE read_markers (
    room_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    position       INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, participant_id)
) WITHOUT ROWID;
