-- PostgreSQL variant of 0001's triggers (storage.migrate applies 0001_init.sql
-- translated, without its SQLite triggers, then this file). Same rules, same
-- messages: events are append-only; the one update allowed is redaction erasure.

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'events are append-only';
    END IF;
    IF NOT (
            NEW.stream_position IS NOT DISTINCT FROM OLD.stream_position
        AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
        AND NEW.room_id IS NOT DISTINCT FROM OLD.room_id
        AND NEW.type IS NOT DISTINCT FROM OLD.type
        AND NEW.sender_id IS NOT DISTINCT FROM OLD.sender_id
        AND NEW.actor_id IS NOT DISTINCT FROM OLD.actor_id
        AND NEW.content_hash IS NOT DISTINCT FROM OLD.content_hash
        AND NEW.origin_ts_ms IS NOT DISTINCT FROM OLD.origin_ts_ms
        AND NEW.depth IS NOT DISTINCT FROM OLD.depth
        AND NEW.prev_event_ids IS NOT DISTINCT FROM OLD.prev_event_ids
        AND NEW.relates_to IS NOT DISTINCT FROM OLD.relates_to
        AND NEW.content = '{}'
        AND NEW.redacted_at_ms IS NOT NULL
        AND (OLD.redacted_at_ms IS NULL OR NEW.redacted_at_ms IS NOT DISTINCT FROM OLD.redacted_at_ms)
    ) THEN
        RAISE EXCEPTION 'events are append-only; only redaction erasure is allowed';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
