-- Trigger functions of the Cuebot-compatible test schema, written for cuesched
-- from the behaviour DESIGN.md and Cuebot's migrations describe. Only the
-- tables of this schema are touched; Cuebot's tables we do not reproduce
-- (depend, comments, job_local, ...) are left out of the cascades.


-- Seconds since the epoch, as Cuebot's history tables store them.
CREATE FUNCTION public.epoch(t timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT extract(epoch FROM t)::integer $$;

-- A tier is how far a counter is into its minimum: reserved / minimum.
CREATE FUNCTION public.tier(reserved bigint, minimum bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN minimum <= 0 THEN reserved::numeric ELSE reserved::numeric / minimum END
$$;

-- Folders ---------------------------------------------------------------------

CREATE FUNCTION public.trigger__before_insert_folder() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A show's root folder is its default folder.
    IF NEW.pk_parent_folder IS NULL THEN
        NEW.b_default := true;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__after_insert_folder() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    lvl bigint := 0;
BEGIN
    IF NEW.pk_parent_folder IS NOT NULL THEN
        SELECT int_level + 1 INTO lvl FROM folder_level WHERE pk_folder = NEW.pk_parent_folder;
    END IF;
    INSERT INTO folder_level (pk_folder_level, pk_folder, int_level) VALUES (NEW.pk_folder, NEW.pk_folder, coalesce(lvl, 0));
    INSERT INTO folder_resource (pk_folder_resource, pk_folder) VALUES (NEW.pk_folder, NEW.pk_folder);
    RETURN NULL;
END $$;

CREATE FUNCTION public.trigger__before_delete_folder() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM folder_level WHERE pk_folder = OLD.pk_folder;
    DELETE FROM folder_resource WHERE pk_folder = OLD.pk_folder;
    RETURN OLD;
END $$;

CREATE FUNCTION public.trigger__tier_folder() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END $$;

-- Jobs ------------------------------------------------------------------------

CREATE FUNCTION public.trigger__after_insert_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Companion rows share the job's key.
    INSERT INTO job_stat (pk_job_stat, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_resource (pk_job_resource, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_usage (pk_job_usage, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_mem (pk_job_mem, pk_job) VALUES (NEW.pk_job, NEW.pk_job);
    INSERT INTO job_history (pk_job, pk_show, pk_facility, pk_dept, str_name, str_shot, str_user, int_ts_started)
    VALUES (NEW.pk_job, NEW.pk_show, NEW.pk_facility, NEW.pk_dept, NEW.str_name, NEW.str_shot, NEW.str_user,
            epoch(current_timestamp));
    RETURN NULL;
END $$;

-- Archives the final counts of a job (and its layers) into the history tables.
CREATE FUNCTION public.cuebot_archive_job(job_id varchar, dept varchar, frames integer, layers integer,
                                          stopped integer, archived boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_history h SET
        pk_dept = dept,
        int_core_time_success = u.int_core_time_success,
        int_core_time_fail = u.int_core_time_fail,
        int_frame_count = frames,
        int_layer_count = layers,
        int_waiting_count = s.int_waiting_count,
        int_dead_count = s.int_dead_count,
        int_depend_count = s.int_depend_count,
        int_eaten_count = s.int_eaten_count,
        int_succeeded_count = s.int_succeeded_count,
        int_running_count = s.int_running_count,
        int_max_rss = m.int_max_rss,
        b_archived = archived OR h.b_archived,
        int_ts_stopped = stopped
    FROM job_stat s, job_usage u, job_mem m
    WHERE h.pk_job = job_id AND s.pk_job = job_id AND u.pk_job = job_id AND m.pk_job = job_id;

    UPDATE layer_history h SET
        int_core_time_success = u.int_core_time_success,
        int_core_time_fail = u.int_core_time_fail,
        int_frame_count = s.int_total_count,
        int_waiting_count = s.int_waiting_count,
        int_dead_count = s.int_dead_count,
        int_depend_count = s.int_depend_count,
        int_eaten_count = s.int_eaten_count,
        int_succeeded_count = s.int_succeeded_count,
        int_running_count = s.int_running_count,
        int_max_rss = m.int_max_rss,
        b_archived = archived OR h.b_archived
    FROM layer_stat s, layer_usage u, layer_mem m
    WHERE s.pk_job = job_id AND h.pk_layer = s.pk_layer AND u.pk_layer = s.pk_layer AND m.pk_layer = s.pk_layer;
END $$;

CREATE FUNCTION public.trigger__after_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cuebot_archive_job(NEW.pk_job, NEW.pk_dept, NEW.int_frame_count, NEW.int_layer_count,
                               epoch(current_timestamp), false);
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__before_delete_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM cuebot_archive_job(OLD.pk_job, OLD.pk_dept, OLD.int_frame_count, OLD.int_layer_count,
                               coalesce(epoch(OLD.ts_stopped), epoch(current_timestamp)), true);
    DELETE FROM frame WHERE pk_job = OLD.pk_job;
    DELETE FROM layer WHERE pk_job = OLD.pk_job;
    DELETE FROM job_env WHERE pk_job = OLD.pk_job;
    DELETE FROM job_stat WHERE pk_job = OLD.pk_job;
    DELETE FROM job_resource WHERE pk_job = OLD.pk_job;
    DELETE FROM job_usage WHERE pk_job = OLD.pk_job;
    DELETE FROM job_mem WHERE pk_job = OLD.pk_job;
    RETURN OLD;
END $$;

-- Moving a running job to another folder or department moves its cores.
CREATE FUNCTION public.trigger__after_job_moved() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cores bigint;
BEGIN
    SELECT int_cores INTO cores FROM job_resource WHERE pk_job = NEW.pk_job;
    IF cores > 0 THEN
        UPDATE folder_resource SET int_cores = int_cores + cores WHERE pk_folder = NEW.pk_folder;
        UPDATE folder_resource SET int_cores = int_cores - cores WHERE pk_folder = OLD.pk_folder;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION public.trigger__after_job_dept_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cores bigint;
BEGIN
    SELECT int_cores INTO cores FROM job_resource WHERE pk_job = NEW.pk_job;
    IF cores > 0 THEN
        UPDATE point SET int_cores = int_cores + cores WHERE pk_dept = NEW.pk_dept AND pk_show = NEW.pk_show;
        UPDATE point SET int_cores = int_cores - cores WHERE pk_dept = OLD.pk_dept AND pk_show = OLD.pk_show;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION public.trigger__tbiu_job_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.dt_last_modified := current_date;
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__tier_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END $$;

-- Guard: a job never runs above its maximum (checked only when the maximum
-- itself is unchanged, so lowering a maximum below what runs is allowed).
CREATE FUNCTION public.trigger__verify_job_resources() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.int_max_cores = OLD.int_max_cores AND NEW.int_cores > NEW.int_max_cores THEN
        RAISE EXCEPTION 'job % has exceeded max cores', NEW.pk_job;
    END IF;
    IF NEW.int_max_gpus = OLD.int_max_gpus AND NEW.int_gpus > NEW.int_max_gpus THEN
        RAISE EXCEPTION 'job % has exceeded max GPU units', NEW.pk_job;
    END IF;
    RETURN NEW;
END $$;

-- Layers ----------------------------------------------------------------------

CREATE FUNCTION public.trigger__after_insert_layer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO layer_stat (pk_layer_stat, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_resource (pk_layer_resource, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_usage (pk_layer_usage, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_mem (pk_layer_mem, pk_layer, pk_job) VALUES (NEW.pk_layer, NEW.pk_layer, NEW.pk_job);
    INSERT INTO layer_history (pk_layer, pk_job, str_name, str_type, int_cores_min, int_mem_min, int_gpus_min,
                               int_gpu_mem_min, str_services)
    VALUES (NEW.pk_layer, NEW.pk_job, NEW.str_name, NEW.str_type, NEW.int_cores_min, NEW.int_mem_min,
            NEW.int_gpus_min, NEW.int_gpu_mem_min, NEW.str_services);
    RETURN NULL;
END $$;

CREATE FUNCTION public.trigger__before_delete_layer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM layer_resource WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_stat WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_usage WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_env WHERE pk_layer = OLD.pk_layer;
    DELETE FROM layer_mem WHERE pk_layer = OLD.pk_layer;
    RETURN OLD;
END $$;

CREATE FUNCTION public.trigger__before_delete_layer_drop_limit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM layer_limit WHERE pk_layer = OLD.pk_layer;
    RETURN OLD;
END $$;

CREATE FUNCTION public.trigger__tbiu_layer_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.dt_last_modified := current_date;
    RETURN NEW;
END $$;

-- Frames ----------------------------------------------------------------------

CREATE FUNCTION public.trigger__set_frame_ts_eligible_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.str_state = 'WAITING' AND NEW.ts_eligible IS NULL THEN
        NEW.ts_eligible := current_timestamp;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__set_frame_ts_eligible_setup_to_wait() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.ts_eligible := current_timestamp;
    RETURN NEW;
END $$;

-- A frame given depends while it is not running waits in DEPEND.
CREATE FUNCTION public.trigger__update_frame_wait_to_dep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.str_state := 'DEPEND';
    NEW.ts_updated := current_timestamp;
    NEW.int_version := NEW.int_version + 1;
    RETURN NEW;
END $$;

-- The last depend released: the frame becomes WAITING and eligible now.
CREATE FUNCTION public.trigger__update_frame_dep_to_wait() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.str_state := 'WAITING';
    NEW.ts_updated := current_timestamp;
    NEW.ts_eligible := current_timestamp;
    NEW.int_version := NEW.int_version + 1;
    RETURN NEW;
END $$;

-- A succeeded frame cannot be eaten.
CREATE FUNCTION public.trigger__update_frame_eaten() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.str_state := 'SUCCEEDED';
    RETURN NEW;
END $$;

-- A checkpointing frame stopped from RUNNING goes to CHECKPOINT, not WAITING.
CREATE FUNCTION public.trigger__update_frame_checkpoint_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.str_state := 'CHECKPOINT';
    RETURN NEW;
END $$;

-- Moves one frame's count from its old state column to its new one in
-- layer_stat, then job_stat (in that order: cuesched's lock order follows it),
-- and stamps the layer's activity window from the frame row.
CREATE FUNCTION public.trigger__update_frame_status_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_col text := 'int_' || lower(OLD.str_state) || '_count';
    new_col text := 'int_' || lower(NEW.str_state) || '_count';
BEGIN
    EXECUTE format('UPDATE layer_stat SET %1$I = %1$I - 1, %2$I = %2$I + 1 WHERE pk_layer = $1', old_col, new_col)
        USING NEW.pk_layer;
    EXECUTE format('UPDATE job_stat SET %1$I = %1$I - 1, %2$I = %2$I + 1 WHERE pk_job = $1', old_col, new_col)
        USING NEW.pk_job;
    IF NEW.str_state = 'RUNNING' THEN
        UPDATE layer_stat SET ts_started = coalesce(ts_started, NEW.ts_started, current_timestamp)
        WHERE pk_layer = NEW.pk_layer;
    END IF;
    IF OLD.str_state = 'RUNNING' THEN
        UPDATE layer_stat SET ts_stopped = coalesce(NEW.ts_stopped, current_timestamp)
        WHERE pk_layer = NEW.pk_layer;
    END IF;
    RETURN NULL;
END $$;

-- Opens a frame_history row when a frame starts RUNNING and closes it when it
-- stops; a booking cleared with exit status 299 leaves no history.
CREATE FUNCTION public.trigger__frame_history_open() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM config WHERE str_key = 'DISABLE_HISTORY') THEN
        RETURN NULL;
    END IF;
    IF OLD.str_state = 'RUNNING' THEN
        IF NEW.int_exit_status = 299 THEN
            DELETE FROM frame_history WHERE pk_frame = NEW.pk_frame AND int_ts_stopped = 0;
        ELSE
            UPDATE frame_history SET
                int_mem_max_used = NEW.int_mem_max_used,
                int_gpu_mem_max_used = NEW.int_gpu_mem_max_used,
                int_ts_stopped = epoch(current_timestamp),
                int_exit_status = NEW.int_exit_status,
                int_checkpoint_count = CASE WHEN NEW.str_state = 'CHECKPOINT' THEN 1 ELSE 0 END
            WHERE pk_frame = NEW.pk_frame AND int_ts_stopped = 0;
        END IF;
    END IF;
    IF NEW.str_state = 'RUNNING' THEN
        INSERT INTO frame_history (pk_frame, pk_layer, pk_job, str_name, str_state, int_mem_reserved,
                                   int_mem_max_used, int_cores, str_host, int_exit_status, pk_alloc,
                                   int_ts_started, int_gpus, int_gpu_mem_reserved)
        VALUES (NEW.pk_frame, NEW.pk_layer, NEW.pk_job, NEW.str_name, 'RUNNING', NEW.int_mem_reserved,
                0, NEW.int_cores, NEW.str_host, -1,
                (SELECT pk_alloc FROM host WHERE str_name = NEW.str_host),
                epoch(current_timestamp), NEW.int_gpus, NEW.int_gpu_mem_reserved);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION public.trigger__tbiu_frame_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.dt_last_modified := current_date;
    RETURN NEW;
END $$;

-- Hosts and procs -------------------------------------------------------------

CREATE FUNCTION public.trigger__before_delete_host() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM host_stat WHERE pk_host = OLD.pk_host;
    DELETE FROM host_tag WHERE pk_host = OLD.pk_host;
    RETURN OLD;
END $$;

-- Guard: a host never gives out more than it has.
CREATE FUNCTION public.trigger__verify_host_resources() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.int_cores_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional core units on host %', NEW.str_name;
    END IF;
    IF NEW.int_mem_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional memory on host %', NEW.str_name;
    END IF;
    IF NEW.int_gpus_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional GPU units on host %', NEW.str_name;
    END IF;
    IF NEW.int_gpu_mem_idle < 0 THEN
        RAISE EXCEPTION 'unable to allocate additional GPU memory on host %', NEW.str_name;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__before_insert_proc() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.int_cores_reserved <= 0 THEN
        RAISE EXCEPTION 'failed to allocate proc, tried to allocate % cores', NEW.int_cores_reserved;
    END IF;
    RETURN NEW;
END $$;

-- A proc moved to another layer moves its cores between the layers' counters,
-- locking the two layer_resource rows in a fixed order.
CREATE FUNCTION public.trigger__update_proc_update_layer() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    l varchar;
BEGIN
    FOR l IN SELECT pk_layer FROM layer_resource WHERE pk_layer IN (OLD.pk_layer, NEW.pk_layer)
             ORDER BY pk_layer DESC LOOP
        IF l = OLD.pk_layer THEN
            UPDATE layer_resource SET int_cores = int_cores - OLD.int_cores_reserved,
                                      int_gpus = int_gpus - OLD.int_gpus_reserved
            WHERE pk_layer = l;
        ELSE
            UPDATE layer_resource SET int_cores = int_cores + NEW.int_cores_reserved,
                                      int_gpus = int_gpus + NEW.int_gpus_reserved
            WHERE pk_layer = l;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- A proc whose memory reservation grows takes the difference from its host.
CREATE FUNCTION public.trigger__upgrade_proc_memory_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE host SET int_mem_idle = int_mem_idle - (NEW.int_mem_reserved - OLD.int_mem_reserved)
    WHERE pk_host = NEW.pk_host;
    RETURN NULL;
END $$;

-- Subscriptions and points ----------------------------------------------------

CREATE FUNCTION public.trigger__tier_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_size);
    RETURN NEW;
END $$;

-- Guard: a show never books above its burst on an allocation (checked only
-- when the burst itself is unchanged).
CREATE FUNCTION public.trigger__verify_subscription() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.int_cores > NEW.int_burst THEN
        RAISE EXCEPTION 'subscription % has exceeded its burst', NEW.pk_subscription;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.trigger__point_tier() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.float_tier := tier(NEW.int_cores, NEW.int_min_cores);
    RETURN NEW;
END $$;
