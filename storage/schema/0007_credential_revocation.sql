-- 0006: deactivated participants and the credential revocation log.
-- Every revocation (an API key, a token family, a participant) appends a row
-- in the transaction that revokes; the server tails this log to close open
-- streams opened with the revoked credential, whichever process revoked it
-- (the REST API or `homeserver admin deactivate-participant`).

ALTER TABLE participants ADD COLUMN deactivated_at_ms INTEGER;

CREATE TABLE credential_revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('credential', 'family', 'participant')),
    value         TEXT NOT NULL,             -- secret hash, family id or participant id
    created_at_ms INTEGER NOT NULL
);
