-- 0006: tenants and API-key scopes (CONTRACT 10).
-- Every participant belongs to one tenant; its admins are the participants of
-- that tenant with is_admin = 1. API keys carry a JSON list of scopes ("*" = all).

ALTER TABLE participants ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'ten_default';
CREATE INDEX participants_tenant ON participants(tenant_id, is_admin);

ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '["*"]';
