-- 0003: per-member room settings, AI engagement, snoozes (the state snapshot).

CREATE TABLE member_settings (
    room_id           TEXT NOT NULL,
    participant_id    TEXT NOT NULL,
    notification_mode TEXT NOT NULL DEFAULT 'mentions'
                      CHECK (notification_mode IN ('all', 'mentions', 'none', 'inherit')),
    muted_until_ms    INTEGER,
    PRIMARY KEY (room_id, participant_id)
) WITHOUT ROWID;

CREATE TABLE room_engagement (
    room_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,            -- '' = the room-wide setting
    mode           TEXT,                     -- always | mention | keyword | autonomous
    response_mode  TEXT,                     -- streaming | conversational
    updated_by     TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, participant_id)
) WITHOUT ROWID;

CREATE TABLE snoozes (
    snooze_id      TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    until_ms       INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (participant_id, event_id)
);
CREATE INDEX snoozes_owner ON snoozes(participant_id, until_ms);
CREATE INDEX snoozes_room ON snoozes(participant_id, room_id, until_ms);
