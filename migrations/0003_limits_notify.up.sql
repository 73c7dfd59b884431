-- limit_record and layer_limit cannot be published (no primary key), so the
-- host cache reads them by query and reloads them when these triggers say
-- they changed. Statement-level, with one constant payload: PostgreSQL
-- delivers identical notifications of one transaction once, so a job launch
-- linking many layers to limits costs one notification.
CREATE FUNCTION cuesched.notify_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cuesched_limits', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER cuesched_limits_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON limit_record
    FOR EACH STATEMENT EXECUTE FUNCTION cuesched.notify_limits();

CREATE TRIGGER cuesched_limits_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON layer_limit
    FOR EACH STATEMENT EXECUTE FUNCTION cuesched.notify_limits();
