-- PostgreSQL variant of 0009's triggers: only the concept vocabulary may be
-- stored as an engagement mode (same message as the SQLite triggers).

CREATE FUNCTION room_engagement_mode_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.mode IS NOT NULL AND NEW.mode NOT IN ('always', 'mention', 'keyword', 'autonomous') THEN
        RAISE EXCEPTION 'room_engagement.mode: not an engagement mode';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER room_engagement_mode_insert BEFORE INSERT ON room_engagement
    FOR EACH ROW EXECUTE FUNCTION room_engagement_mode_check();

CREATE TRIGGER room_engagement_mode_update BEFORE UPDATE OF mode ON room_engagement
    FOR EACH ROW EXECUTE FUNCTION room_engagement_mode_check();
