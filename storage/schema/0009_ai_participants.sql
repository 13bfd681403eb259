-- 0008: AI participants in rooms (CONTRACT 12).
-- An AI participant is a participants row (type bot | agent | persona, id ai-...)
-- plus this row: its model, system prompt, own engagement default, creator and
-- tenant. Deleting one keeps both rows (its events name it) and sets deleted_at_ms.
--
-- The engagement default. Until now a room without a stored room-wide mode
-- reported 'always' (a constant in code, never a stored row); the contract
-- default is 'mention', except 'always' in a DM with an AI. It stays
-- computed from the room type and its members (protocol.ai.default_mode), so
-- rooms follow it without a row each. Stored rows are explicit choices and
-- are kept; the input alias 'default', which used to be written as 'always',
-- now clears the row (NULL = the default). The triggers below keep stored
-- modes inside the concept vocabulary.

CREATE TABLE ai_participants (
    participant_id TEXT PRIMARY KEY REFERENCES participants(participant_id),
    tenant_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    model          TEXT NOT NULL,
    system_prompt  TEXT NOT NULL DEFAULT '',
    engagement     TEXT CHECK (engagement IS NULL OR engagement IN ('mention', 'always')),
    created_by     TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    deleted_at_ms  INTEGER
);
CREATE INDEX ai_participants_tenant ON ai_participants(tenant_id, deleted_at_ms, created_at_ms);

-- Only the concept vocabulary may be stored as an engagement mode from now on.
CREATE TRIGGER room_engagement_mode_insert BEFORE INSERT ON room_engagement
WHEN NEW.mode IS NOT NULL AND NEW.mode NOT IN ('always', 'mention', 'keyword', 'autonomous')
BEGIN
    SELECT RAISE(ABORT, 'room_engagement.mode: not an engagement mode');
END;
CREATE TRIGGER room_engagement_mode_update BEFORE UPDATE OF mode ON room_engagement
WHEN NEW.mode IS NOT NULL AND NEW.mode NOT IN ('always', 'mention', 'keyword', 'autonomous')
BEGIN
    SELECT RAISE(ABORT, 'room_engagement.mode: not an engagement mode');
END;
