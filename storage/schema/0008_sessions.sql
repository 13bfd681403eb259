-- 0007: ScaiGrid sessions (CONTRACT 11): a participant's own stored conversation
-- with a model. DELETE /v1/sessions/{id} only sets deleted_at_ms (the rows stay
-- for audit); `homeserver admin purge-session` removes them.
-- generating_message_id: the assistant message being generated (set with the
-- user message, cleared when the reply is stored; start-up closes what a
-- crash left behind).

CREATE TABLE sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES participants(participant_id),
    model TEXT NOT NULL,
    title TEXT,
    system_prompt TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    message_count INTEGER NOT NULL DEFAULT 0,
    generating_message_id TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    deleted_at_ms INTEGER,
    deleted_by TEXT
);
CREATE INDEX sessions_owner ON sessions(owner_id, seq) WHERE deleted_at_ms IS NULL;
CREATE INDEX sessions_tenant ON sessions(tenant_id, seq) WHERE deleted_at_ms IS NULL;
CREATE INDEX sessions_generating ON sessions(generating_message_id)
    WHERE generating_message_id IS NOT NULL;

CREATE TABLE session_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    tokens INTEGER,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX session_messages_by_session ON session_messages(session_id, seq);
