DROP TRIGGER IF EXISTS cuesched_limits_notify ON layer_limit;
DROP TRIGGER IF EXISTS cuesched_limits_notify ON limit_record;
DROP FUNCTION IF EXISTS cuesched.notify_limits();
