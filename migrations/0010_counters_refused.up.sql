-- The counter rows of managed shows that Cuebot's guard triggers refuse an
-- instance when it sets them to their sums (a host with running procs moved
-- to an allocation where the show is near its burst): a JSON array of
-- {"table", "key", "error"}, written by package status when it changes. NULL:
-- none. Each such row is held at its cap until its rows change.
ALTER TABLE cuesched.instance ADD COLUMN counters_refused jsonb;
