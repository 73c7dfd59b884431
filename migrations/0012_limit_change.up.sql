-- When a limit was last tightened, for the invariant audit (`cuesched audit`,
-- internal/audit): a proc over a limit is left legal when it was booked
-- before the limit came down under it, and illegal when booked after. Cuebot's
-- rows record no such time, so triggers on its tables write it here, one row
-- per limit holding the latest change:
--   subscription: int_burst lowered (key pk_subscription)
--   job, folder: int_max_cores or int_max_gpus lowered (key pk_job, pk_folder)
--   limit: limit_record.int_max_value lowered (key pk_limit_record)
--   host: moved to another allocation, taking its procs into another
--         subscription (key pk_host)
--   show: handed back to Cuebot, b_scheduler_managed turned false (key pk_show)
-- A booking locks the subscription, job, folder, limit and host rows it
-- books against, so a change of one of them and a booking are ordered by
-- that lock: a booking that began after the change's row was written waited
-- for its commit and saw the new value. A booking reads the show unlocked, so
-- a release is stamped when it commits (a deferred trigger): a booking that
-- began before then may have read the show still managed.
CREATE TABLE cuesched.limit_change (
    what       text        NOT NULL CHECK (what IN ('subscription', 'job', 'folder', 'limit', 'host', 'show')),
    key        varchar(36) NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (what, key)
);

-- SECURITY DEFINER: the triggers run inside Cuebot's transactions, whose role
-- need not have any right on schema cuesched. A change older than every proc
-- decides nothing (each proc was booked after it either way), so each write
-- drops those: the table stays as small as the changes of the running work.
CREATE FUNCTION cuesched.limit_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- SKIP LOCKED: pruning never waits on another change's transaction.
    DELETE FROM cuesched.limit_change
     WHERE (what, key) IN (SELECT what, key FROM cuesched.limit_change
                            WHERE changed_at < coalesce((SELECT min(ts_booked) FROM public.proc), 'infinity')
                              FOR UPDATE SKIP LOCKED);
    INSERT INTO cuesched.limit_change (what, key, changed_at)
    VALUES (TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[1], clock_timestamp())
        ON CONFLICT (what, key) DO UPDATE SET changed_at = EXCLUDED.changed_at;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_limit_change
    AFTER UPDATE OF int_burst ON public.subscription
    FOR EACH ROW WHEN (NEW.int_burst < OLD.int_burst)
    EXECUTE FUNCTION cuesched.limit_changed('subscription', 'pk_subscription');

CREATE TRIGGER cuesched_limit_change
    AFTER UPDATE OF int_max_cores, int_max_gpus ON public.job_resource
    FOR EACH ROW WHEN (NEW.int_max_cores < OLD.int_max_cores OR NEW.int_max_gpus < OLD.int_max_gpus)
    EXECUTE FUNCTION cuesched.limit_changed('job', 'pk_job');

-- -1 is unlimited: a change from -1 to anything lowers it.
CREATE TRIGGER cuesched_limit_change
    AFTER UPDATE OF int_max_cores, int_max_gpus ON public.folder_resource
    FOR EACH ROW WHEN ((NEW.int_max_cores >= 0 AND (OLD.int_max_cores < 0 OR NEW.int_max_cores < OLD.int_max_cores))
                    OR (NEW.int_max_gpus >= 0 AND (OLD.int_max_gpus < 0 OR NEW.int_max_gpus < OLD.int_max_gpus)))
    EXECUTE FUNCTION cuesched.limit_changed('folder', 'pk_folder');

CREATE TRIGGER cuesched_limit_change
    AFTER UPDATE OF int_max_value ON public.limit_record
    FOR EACH ROW WHEN (NEW.int_max_value IS NULL OR NEW.int_max_value < OLD.int_max_value)
    EXECUTE FUNCTION cuesched.limit_changed('limit', 'pk_limit_record');

CREATE TRIGGER cuesched_limit_change
    AFTER UPDATE OF pk_alloc ON public.host
    FOR EACH ROW WHEN (NEW.pk_alloc IS DISTINCT FROM OLD.pk_alloc)
    EXECUTE FUNCTION cuesched.limit_changed('host', 'pk_host');

CREATE CONSTRAINT TRIGGER cuesched_limit_change
    AFTER UPDATE OF b_scheduler_managed ON public.show
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.b_scheduler_managed AND NOT NEW.b_scheduler_managed)
    EXECUTE FUNCTION cuesched.limit_changed('show', 'pk_show');

INSERT INTO cuesched.migration (version, compatible, why) VALUES
    (12, true, 'adds the table limit_change and triggers writing it, which the release before it does not read');
