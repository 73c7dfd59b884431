-- A layer's last waiting frame booked (int_waiting_count more -> 0): every
-- instance's pending-layer queue holds every cluster's layers, but only the
-- owner's booking sees the layer drain. Without a hint the others kept it
-- queued until its job left (or the next rebuild) and counted it as work of
-- its cluster; the leader weighs clusters by those counts and moved clusters
-- to balance work that was long booked.
--
-- The hint is 0008's: a transactional logical decoding message "job:<pk_job>"
-- through the change stream (no notify lock on the booking's commit), sent by
-- the same function, whose check leaves Cuebot's own shows out. The queue
-- reads the job again and drops the layers that no longer wait. The WHEN
-- clause passes only the transition, once per layer drained, never per frame.
CREATE TRIGGER cuesched_work_layer_drained
    AFTER UPDATE OF int_waiting_count ON layer_stat
    FOR EACH ROW WHEN (OLD.int_waiting_count > 0 AND NEW.int_waiting_count = 0)
    EXECUTE FUNCTION cuesched.work_retry();

INSERT INTO cuesched.migration (version, compatible, why) VALUES
    (13, true, 'adds a trigger sending a hint the release before it reads as any other job hint');
