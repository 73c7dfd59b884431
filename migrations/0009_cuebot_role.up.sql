-- Our trigger functions run as the role whose write fires them, which at a
-- site is Cuebot's application role: it has rights on Cuebot's tables and
-- none on schema cuesched. 0004's job trigger called cuesched.work_notify,
-- and calling a function by its schema's name needs USAGE on that schema, so
-- every UPDATE job by that role failed (Cuebot could not pause, unpause or
-- finish a job). The others name only Cuebot's tables, pg_notify and
-- pg_logical_emit_message, and 0005's forget_launch, which writes to schema
-- cuesched, is SECURITY DEFINER.
--
-- So the job trigger splits its payloads itself and work_notify goes. Not
-- SECURITY DEFINER with a pinned search_path: that would make every UPDATE
-- job, which fires this statement trigger, pay for switching role and
-- search_path.
CREATE OR REPLACE FUNCTION cuesched.work_job() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := '';
    id text;
BEGIN
    FOR id IN
        SELECT n.pk_job::text
          FROM cuesched_new_job n
          JOIN cuesched_old_job o ON o.pk_job = n.pk_job
          JOIN show s ON s.pk_show = n.pk_show
         WHERE ((o.b_paused AND NOT n.b_paused) OR n.pk_folder <> o.pk_folder OR n.str_os IS DISTINCT FROM o.str_os)
           AND n.str_state = 'PENDING' AND NOT n.b_paused AND s.b_scheduler_managed AND s.b_active
         ORDER BY n.pk_job COLLATE "C"
    LOOP
        -- No payload above about 7,000 bytes (PostgreSQL's limit is 8,000).
        IF payload <> '' AND octet_length(payload) + octet_length(id) + 1 > 7000 THEN
            PERFORM pg_notify('cuesched_work', payload);
            payload := '';
        END IF;
        IF payload = '' THEN
            payload := 'job:' || id;
        ELSE
            payload := payload || ',' || id;
        END IF;
    END LOOP;
    IF payload <> '' THEN
        PERFORM pg_notify('cuesched_work', payload);
    END IF;
    RETURN NULL;
END $$;

DROP FUNCTION cuesched.work_notify(text, text[]);
