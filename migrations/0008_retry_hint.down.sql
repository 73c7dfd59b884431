DROP TRIGGER cuesched_work_layer_retry ON layer_stat;
DROP FUNCTION cuesched.work_retry();
CREATE OR REPLACE TRIGGER cuesched_work_layer_waiting
    AFTER UPDATE OF int_waiting_count ON layer_stat
    FOR EACH ROW WHEN (OLD.int_waiting_count = 0 AND NEW.int_waiting_count > 0)
    EXECUTE FUNCTION cuesched.work_job_row();
