-- 0007 (assigned 0009 on main): ScaiBot (seed 002, CONTRACT 13).
-- Bots and what hangs off them (tone, escalation rules, embed-token rows) go with
-- the bot; conversations, their messages and escalations outlive it, anonymised.

CREATE TABLE scaibot_bots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    collection_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    model TEXT NOT NULL,
    display_name TEXT NOT NULL,
    welcome_message TEXT,
    placeholder_text TEXT,
    primary_color TEXT,
    max_tokens_per_response INTEGER NOT NULL,
    max_context_messages INTEGER NOT NULL,
    knowledge_enabled INTEGER NOT NULL,
    knowledge_mode TEXT NOT NULL,
    knowledge_collection_id TEXT,
    knowledge_settings TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (tenant_id, slug)
);
CREATE INDEX scaibot_bots_tenant ON scaibot_bots(tenant_id, status, seq);

CREATE TABLE scaibot_tones (
    bot_id TEXT PRIMARY KEY REFERENCES scaibot_bots(bot_id) ON DELETE CASCADE,
    tone TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE scaibot_rules (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id TEXT NOT NULL UNIQUE,
    bot_id TEXT NOT NULL REFERENCES scaibot_bots(bot_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    priority INTEGER NOT NULL,
    trigger_type TEXT NOT NULL,
    trigger_config TEXT NOT NULL,
    action_type TEXT NOT NULL,
    action_config TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX scaibot_rules_bot ON scaibot_rules(bot_id, priority DESC, seq);

CREATE TABLE scaibot_embed_tokens (
    token_id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL REFERENCES scaibot_bots(bot_id) ON DELETE CASCADE,
    visitor_id TEXT NOT NULL,
    visitor_email TEXT,
    visitor_name TEXT,
    metadata TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX scaibot_embed_tokens_bot ON scaibot_embed_tokens(bot_id);

CREATE TABLE scaibot_conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    visitor_id TEXT,
    visitor_email TEXT,
    visitor_name TEXT,
    metadata TEXT,
    channel TEXT NOT NULL,  -- embed | operator
    status TEXT NOT NULL CHECK (status IN ('active', 'closed', 'escalated')),
    started_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX scaibot_conversations_tenant ON scaibot_conversations(tenant_id, seq);
CREATE INDEX scaibot_conversations_bot ON scaibot_conversations(bot_id, seq);
CREATE INDEX scaibot_conversations_visitor ON scaibot_conversations(visitor_id, seq);

CREATE TABLE scaibot_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES scaibot_conversations(conversation_id),
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'operator')),
    content TEXT NOT NULL,
    citations TEXT,
    retrieved TEXT,
    tokens INTEGER,
    latency_ms INTEGER,
    finish_reason TEXT,
    author_id TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX scaibot_messages_conversation ON scaibot_messages(conversation_id, seq);

CREATE TABLE scaibot_escalations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    escalation_id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES scaibot_conversations(conversation_id),
    tenant_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    message_id TEXT,
    rule_id TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    action_type TEXT NOT NULL,
    message TEXT NOT NULL,
    stage TEXT NOT NULL,  -- pre | post
    status TEXT NOT NULL,  -- pending | delivered | failed | open | answered
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    answered_by TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX scaibot_escalations_conversation ON scaibot_escalations(conversation_id, seq);
CREATE INDEX scaibot_escalations_queue ON scaibot_escalations(tenant_id, action_type, status, seq);
