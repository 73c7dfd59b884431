DELETE FROM cuesched.migration WHERE version = 13;
DROP TRIGGER cuesched_work_layer_drained ON layer_stat;
