-- Rolling upgrades (README, "Upgrading"): whether the release before a
-- migration runs on the schema it leaves, beside the release that brings it,
-- so that replicas can be replaced one at a time. An instance accepts the
-- schema of its own newest migration, and the next one when its row here
-- says compatible: it reads the mark of a migration it does not hold as a
-- file, so the mark lives in the database, and each migration records its own
-- row as its last statement (in its transaction; its down deletes the row).
-- Older binaries read this table: its columns stay as they are.
CREATE TABLE cuesched.migration (
    version    integer PRIMARY KEY, -- the migration's number
    -- true: the release before this migration runs on the schema it leaves,
    -- beside the release that brings it (nothing it reads or writes changed,
    -- and nothing the new release needs from it is missing)
    compatible boolean NOT NULL,
    why        text    NOT NULL
);

-- The marks of 0001 to 0010, judged by reading each, and this migration's.
-- Release 0011 is the first to read them: the releases before it refuse at
-- start any schema but their own.
INSERT INTO cuesched.migration (version, compatible, why) VALUES
    (1, false, 'installs cuesched: no release runs without it'),
    (2, true, 'adds the publication cuesched_cache, which the release before it does not read'),
    (3, true, 'adds triggers notifying channel cuesched_limits, which the release before it does not listen on'),
    (4, true, 'adds triggers notifying channel cuesched_work, which the release before it does not listen on'),
    (5, true, 'adds the launch outbox and a trigger deleting a proc''s row with it; the release before it did not book yet'),
    (6, false, 'adds cluster ownership, in which the release before it takes no part: beside the new release it would book in clusters another instance owns'),
    (7, true, 'adds nullable columns to cuesched.instance and the table cluster_wait; the release before it uses neither, and status shows its instances as never having reported'),
    (8, false, 'moves a retry''s hint from NOTIFY to a message in the change stream, which the release before it does not ask for: retried frames of its clusters would wait for its next resync'),
    (9, true, 'rewrites the job trigger to send the same hints without naming schema cuesched and drops work_notify, which only that trigger called'),
    (10, true, 'adds the nullable column cuesched.instance.counters_refused, which the release before it neither reads nor writes'),
    (11, false, 'adds these marks; the release before it predates them and refuses at start any schema but its own: stop it, migrate, start');
