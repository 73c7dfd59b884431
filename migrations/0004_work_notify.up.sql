-- Hints to the scheduler, on channel cuesched_work, that work may have become
-- dispatchable. Payloads are "kind:id[,id...]" with kind job, show, folder,
-- limit or alloc; the scheduler re-reads what a payload names, so a hint is
-- never the record and a lost one is made good by the resync that follows
-- every reconnect.
--
-- NOTIFY serialises the commits that send it, so every trigger here fires on
-- transitions only, and Cuebot's hot writes (frame state changes, host
-- reports, bookings, releases, counters) pass a WHEN clause that is false or
-- name no column listed in UPDATE OF, so no function runs for them. Row
-- triggers send one id; PostgreSQL delivers identical payloads of one
-- transaction once, so a launch that sets the counts of all of a job's layers
-- sends one notification. The job trigger is a statement trigger, as one
-- statement may unpause many jobs: it sends their ids together, split so that
-- no payload exceeds about 7,000 bytes (PostgreSQL's limit is 8,000).

-- work_notify sends ids of one kind in as few payloads as fit.
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

-- work_job_row names the row's job (layer_stat, job_resource, layer) when
-- cuesched may book it: its show is managed and active and the job unpaused
-- and PENDING (at launch the counts are set while it is still STARTUP). The
-- check is written out in each function rather than shared through a SQL
-- function, because PL/pgSQL keeps its own statements' plans for the session
-- but would plan a called SQL function again in every transaction.
CREATE FUNCTION cuesched.work_job_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM job j JOIN show s ON s.pk_show = j.pk_show
     WHERE j.pk_job = NEW.pk_job AND NOT j.b_paused AND j.str_state IN ('PENDING', 'STARTUP')
       AND s.b_scheduler_managed AND s.b_active;
    IF FOUND THEN
        PERFORM pg_notify('cuesched_work', 'job:' || NEW.pk_job);
    END IF;
    RETURN NULL;
END $$;

-- A layer gets waiting frames: Cuebot's launch sets all of a job's layer
-- counts in one statement; a depend release and a retry move them one frame
-- at a time through the frame trigger. Only 0 -> more is a transition.
CREATE TRIGGER cuesched_work_layer_waiting
    AFTER UPDATE OF int_waiting_count ON layer_stat
    FOR EACH ROW WHEN (OLD.int_waiting_count = 0 AND NEW.int_waiting_count > 0)
    EXECUTE FUNCTION cuesched.work_job_row();

-- A job is re-prioritised or its caps raised (bookings and releases move
-- int_cores and int_gpus, which are not listed).
CREATE TRIGGER cuesched_work_job_resource
    AFTER UPDATE OF int_priority, int_max_cores, int_max_gpus ON job_resource
    FOR EACH ROW WHEN (NEW.int_priority <> OLD.int_priority
                       OR NEW.int_max_cores > OLD.int_max_cores
                       OR NEW.int_max_gpus > OLD.int_max_gpus)
    EXECUTE FUNCTION cuesched.work_job_row();

-- A layer's requirements change (an edit, Cuebot raising a layer's memory):
-- what the queue holds of it must be read again.
CREATE TRIGGER cuesched_work_layer_edit
    AFTER UPDATE OF str_tags, int_cores_min, int_cores_max, int_mem_min, int_gpus_min, int_gpu_mem_min,
                    b_threadable, str_services, ts_start_after ON layer
    FOR EACH ROW WHEN (NEW.str_tags <> OLD.str_tags
                       OR NEW.int_cores_min <> OLD.int_cores_min
                       OR NEW.int_cores_max <> OLD.int_cores_max
                       OR NEW.int_mem_min <> OLD.int_mem_min
                       OR NEW.int_gpus_min <> OLD.int_gpus_min
                       OR NEW.int_gpu_mem_min <> OLD.int_gpu_mem_min
                       OR NEW.b_threadable <> OLD.b_threadable
                       OR NEW.str_services <> OLD.str_services
                       OR NEW.ts_start_after IS DISTINCT FROM OLD.ts_start_after)
    EXECUTE FUNCTION cuesched.work_job_row();

-- A layer is linked to a limit or unlinked from one.
CREATE FUNCTION cuesched.work_layer_limit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    lyr text;
    job text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        lyr := OLD.pk_layer;
    ELSE
        lyr := NEW.pk_layer;
    END IF;
    SELECT j.pk_job INTO job FROM layer l JOIN job j ON j.pk_job = l.pk_job JOIN show s ON s.pk_show = j.pk_show
     WHERE l.pk_layer = lyr AND NOT j.b_paused AND j.str_state IN ('PENDING', 'STARTUP')
       AND s.b_scheduler_managed AND s.b_active;
    IF job IS NOT NULL THEN
        PERFORM pg_notify('cuesched_work', 'job:' || job);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_layer_limit
    AFTER INSERT OR DELETE ON layer_limit
    FOR EACH ROW EXECUTE FUNCTION cuesched.work_layer_limit();

-- Jobs unpaused, moved to another folder (other caps) or given another OS.
CREATE FUNCTION cuesched.work_job() RETURNS trigger
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

CREATE TRIGGER cuesched_work_job
    AFTER UPDATE ON job
    REFERENCING OLD TABLE AS cuesched_old_job NEW TABLE AS cuesched_new_job
    FOR EACH STATEMENT EXECUTE FUNCTION cuesched.work_job();

-- A show becomes managed and active.
CREATE FUNCTION cuesched.work_show() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cuesched_work', 'show:' || NEW.pk_show);
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_show
    AFTER UPDATE OF b_scheduler_managed, b_active ON show
    FOR EACH ROW WHEN (NEW.b_scheduler_managed AND NEW.b_active
                       AND NOT (OLD.b_scheduler_managed AND OLD.b_active))
    EXECUTE FUNCTION cuesched.work_show();

-- A managed show's subscription grows (bookings move int_cores, not listed)
-- or a new one is made.
CREATE FUNCTION cuesched.work_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM show WHERE pk_show = NEW.pk_show AND b_scheduler_managed AND b_active) THEN
        PERFORM pg_notify('cuesched_work', 'show:' || NEW.pk_show);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_subscription_burst
    AFTER UPDATE OF int_burst ON subscription
    FOR EACH ROW WHEN (NEW.int_burst > OLD.int_burst)
    EXECUTE FUNCTION cuesched.work_subscription();

CREATE TRIGGER cuesched_work_subscription_new
    AFTER INSERT ON subscription
    FOR EACH ROW WHEN (NEW.int_burst > 0)
    EXECUTE FUNCTION cuesched.work_subscription();

-- A folder of a managed show gets more room (-1 is unlimited).
CREATE FUNCTION cuesched.work_folder() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM folder f JOIN show s ON s.pk_show = f.pk_show
                WHERE f.pk_folder = NEW.pk_folder AND s.b_scheduler_managed AND s.b_active) THEN
        PERFORM pg_notify('cuesched_work', 'folder:' || NEW.pk_folder);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_folder
    AFTER UPDATE OF int_max_cores, int_max_gpus ON folder_resource
    FOR EACH ROW WHEN ((OLD.int_max_cores >= 0 AND (NEW.int_max_cores < 0 OR NEW.int_max_cores > OLD.int_max_cores))
                       OR (OLD.int_max_gpus >= 0 AND (NEW.int_max_gpus < 0 OR NEW.int_max_gpus > OLD.int_max_gpus)))
    EXECUTE FUNCTION cuesched.work_folder();

-- A limit's maximum grows (or is cleared).
CREATE FUNCTION cuesched.work_limit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cuesched_work', 'limit:' || NEW.pk_limit_record);
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_limit
    AFTER UPDATE OF int_max_value ON limit_record
    FOR EACH ROW WHEN (NEW.int_max_value IS DISTINCT FROM OLD.int_max_value
                       AND (NEW.int_max_value IS NULL OR OLD.int_max_value IS NULL
                            OR NEW.int_max_value > OLD.int_max_value))
    EXECUTE FUNCTION cuesched.work_limit();

-- Allocations decide which cluster a layer's tags fall in.
CREATE FUNCTION cuesched.work_alloc() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('cuesched_work', 'alloc:' || OLD.pk_alloc);
    ELSE
        PERFORM pg_notify('cuesched_work', 'alloc:' || NEW.pk_alloc);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_alloc
    AFTER INSERT OR DELETE ON alloc
    FOR EACH ROW EXECUTE FUNCTION cuesched.work_alloc();

CREATE TRIGGER cuesched_work_alloc_tag
    AFTER UPDATE OF str_tag, pk_facility ON alloc
    FOR EACH ROW WHEN (NEW.str_tag IS DISTINCT FROM OLD.str_tag OR NEW.pk_facility <> OLD.pk_facility)
    EXECUTE FUNCTION cuesched.work_alloc();
