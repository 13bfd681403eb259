-- 0001: participants, credentials, rooms, memberships, the event DAG.
-- Applied once, in order, by storage.migrate; recorded in schema_version.

CREATE TABLE participants (
    participant_id   TEXT PRIMARY KEY,
    username         TEXT UNIQUE,              -- login name, lower case; NULL for no login
    display_name     TEXT NOT NULL,
    participant_type TEXT NOT NULL CHECK (participant_type IN
                         ('human', 'model', 'agent', 'bot', 'persona', 'bridge')),
    password_hash    TEXT,                     -- argon2id; NULL = no password login
    is_admin         INTEGER NOT NULL DEFAULT 0,
    avatar_url       TEXT,
    bio              TEXT,
    created_at_ms    INTEGER NOT NULL
);

-- Access and refresh tokens, stored as SHA-256 of the secret. A refresh token
-- belongs to a family; using a revoked refresh token revokes its family.
CREATE TABLE tokens (
    token_hash     TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    kind           TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    family_id      TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    revoked        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_family ON tokens(family_id);

CREATE TABLE api_keys (
    key_id         TEXT PRIMARY KEY,
    key_hash       TEXT NOT NULL UNIQUE,       -- SHA-256 of the secret
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    name           TEXT NOT NULL,
    prefix         TEXT NOT NULL,              -- first characters, to recognise a key
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER,
    revoked_at_ms  INTEGER
);
CREATE INDEX api_keys_owner ON api_keys(participant_id);

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    room_type      TEXT NOT NULL,
    name           TEXT,
    topic          TEXT,
    is_public      INTEGER NOT NULL DEFAULT 0,
    creator_id     TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'archived')),
    thresholds     TEXT NOT NULL,              -- JSON power thresholds
    dm_key         TEXT UNIQUE,                -- 'a|b' sorted ids, for idempotent DMs
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    -- The chain head: the room's single forward extremity.
    last_event_id  TEXT,
    last_depth     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rooms_public ON rooms(is_public, state);

CREATE TABLE memberships (
    room_id        TEXT NOT NULL REFERENCES rooms(room_id),
    participant_id TEXT NOT NULL REFERENCES participants(participant_id),
    membership     TEXT NOT NULL CHECK (membership IN ('join', 'leave', 'invite', 'ban')),
    power_level    INTEGER NOT NULL DEFAULT 0,
    read_only      INTEGER NOT NULL DEFAULT 0,
    changed_by     TEXT,
    joined_at_ms   INTEGER,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, participant_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_participant ON memberships(participant_id, membership);

-- What a participant may see through /sync and the stream: one span per stay
-- in a room, from the join event to the event that ended it (inclusive).
CREATE TABLE membership_spans (
    room_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    from_pos       INTEGER NOT NULL,
    to_pos         INTEGER,                    -- NULL while still joined
    PRIMARY KEY (participant_id, room_id, from_pos)
) WITHOUT ROWID;

-- The DAG. stream_position is server-wide and strictly increasing (AUTOINCREMENT
-- never reuses a value). Rows are append-only: see the triggers below.
CREATE TABLE events (
    stream_position  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    sender_id        TEXT NOT NULL,
    actor_id         TEXT NOT NULL,
    content          TEXT NOT NULL,            -- JSON object; '{}' once erased
    content_hash     TEXT NOT NULL,
    origin_ts_ms     INTEGER NOT NULL,
    depth            INTEGER NOT NULL,
    prev_event_ids   TEXT NOT NULL,            -- JSON array of event ids
    relates_to       TEXT,                     -- target of an edit/redaction/reaction
    redacted_at_ms   INTEGER,
    redacted_by      TEXT,
    redaction_reason TEXT
);
CREATE INDEX events_room_position ON events(room_id, stream_position);
CREATE INDEX events_relates_to ON events(relates_to) WHERE relates_to IS NOT NULL;

CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- The one mutation ever allowed: redaction erasure. Identity, chain and
-- position never change; content may only become '{}', and only together
-- with redacted_at_ms being set (once).
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
WHEN NOT (
        NEW.stream_position IS OLD.stream_position
    AND NEW.event_id IS OLD.event_id
    AND NEW.room_id IS OLD.room_id
    AND NEW.type IS OLD.type
    AND NEW.sender_id IS OLD.sender_id
    AND NEW.actor_id IS OLD.actor_id
    AND NEW.content_hash IS OLD.content_hash
    AND NEW.origin_ts_ms IS OLD.origin_ts_ms
    AND NEW.depth IS OLD.depth
    AND NEW.prev_event_ids IS OLD.prev_event_ids
    AND NEW.relates_to IS OLD.relates_to
    AND NEW.content = '{}'
    AND NEW.redacted_at_ms IS NOT NULL
    AND (OLD.redacted_at_ms IS NULL OR NEW.redacted_at_ms IS OLD.redacted_at_ms)
)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only; only redaction erasure is allowed');
END;

-- Idempotent sends: (effective sender, event_uuid) -> the event it made.
CREATE TABLE idempotency (
    sender_id     TEXT NOT NULL,
    event_uuid    TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sender_id, event_uuid)
) WITHOUT ROWID;
CREATE INDEX idempotency_age ON idempotency(created_at_ms);
