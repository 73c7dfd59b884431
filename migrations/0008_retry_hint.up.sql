-- A retry (a frame RUNNING -> WAITING, Cuebot's frame trigger moving one
-- count from int_running_count to int_waiting_count of layer_stat in one
-- UPDATE) is the one transition of 0004's that rides on Cuebot's hottest
-- write, a frame's completion. A NOTIFY there takes PostgreSQL's global
-- notify lock across the commit and wakes every listener; measured on a load
-- of retries that each move a layer 0 -> 1 waiting, it cost 2.6-3.9% of Cuebot's
-- write throughput. So a retry's hint goes into the write-ahead log instead,
-- as a transactional logical decoding message (no lock, delivered only if
-- the transaction commits), and reaches every instance through the change
-- stream it already reads (publication cuesched_cache, pgoutput with messages
-- on).
-- The payload is 0004's ("job:<pk_job>"), the prefix its channel's name; a
-- message is written per layer that goes 0 -> 1, and the consumer hands each
-- distinct payload of a transaction on once, as NOTIFY would deliver it.
--
-- Every other 0 -> more transition (launch, depend release, a dead frame
-- retried by hand) keeps 0004's NOTIFY: those do not lower the running count.
CREATE OR REPLACE TRIGGER cuesched_work_layer_waiting
    AFTER UPDATE OF int_waiting_count ON layer_stat
    FOR EACH ROW WHEN (OLD.int_waiting_count = 0 AND NEW.int_waiting_count > 0
                       AND NEW.int_running_count >= OLD.int_running_count)
    EXECUTE FUNCTION cuesched.work_job_row();

-- The same check as work_job_row. pg_logical_emit_message is open to every
-- role (Cuebot's needs no right of ours) and works at any wal_level.
CREATE FUNCTION cuesched.work_retry() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM job j JOIN show s ON s.pk_show = j.pk_show
     WHERE j.pk_job = NEW.pk_job AND NOT j.b_paused AND j.str_state IN ('PENDING', 'STARTUP')
       AND s.b_scheduler_managed AND s.b_active;
    IF FOUND THEN
        PERFORM pg_logical_emit_message(true, 'cuesched_work', 'job:' || NEW.pk_job);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_work_layer_retry
    AFTER UPDATE OF int_waiting_count ON layer_stat
    FOR EACH ROW WHEN (OLD.int_waiting_count = 0 AND NEW.int_waiting_count > 0
                       AND NEW.int_running_count < OLD.int_running_count)
    EXECUTE FUNCTION cuesched.work_retry();
