-- Back to 0004's job trigger and its helper, as 0008 left them.
CREATE FUNCTION cuesched.work_notify(kind text, ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text := '';
    id text;
BEGIN
    IF ids IS NULL THEN
        RETURN;
    END IF;
    FOREACH id IN ARRAY ids LOOP
        IF payload <> '' AND octet_length(payload) + octet_length(id) + 1 > 7000 THEN
            PERFORM pg_notify('cuesched_work', payload);
            payload := '';
        END IF;
        IF payload = '' THEN
            payload := kind || ':' || id;
        ELSE
            payload := payload || ',' || id;
        END IF;
    END LOOP;
    IF payload <> '' THEN
        PERFORM pg_notify('cuesched_work', payload);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION cuesched.work_job() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text[];
BEGIN
    SELECT array_agg(n.pk_job::text ORDER BY n.pk_job COLLATE "C") INTO ids
      FROM cuesched_new_job n
      JOIN cuesched_old_job o ON o.pk_job = n.pk_job
      JOIN show s ON s.pk_show = n.pk_show
     WHERE ((o.b_paused AND NOT n.b_paused) OR n.pk_folder <> o.pk_folder OR n.str_os IS DISTINCT FROM o.str_os)
       AND n.str_state = 'PENDING' AND NOT n.b_paused AND s.b_scheduler_managed AND s.b_active;
    PERFORM cuesched.work_notify('job', ids);
    RETURN NULL;
END $$;
