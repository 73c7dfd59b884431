ALTER TABLE cuesched.instance DROP COLUMN counters_refused;
