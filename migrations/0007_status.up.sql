-- What `cuesched status` shows besides the coordination tables: each
-- instance's replication position, and why the layers of the clusters it owns
-- still wait. Package status writes both, only when they changed and at most
-- every few seconds, so an idle instance writes nothing here.
ALTER TABLE cuesched.instance
    ADD COLUMN applied_lsn pg_lsn,      -- what its host cache had applied when it reported
    ADD COLUMN lag_bytes   bigint,      -- WAL it was behind the server then
    ADD COLUMN reported_at timestamptz; -- NULL: it never reported

-- The reasons matching gave, after the owner's last round, for the layers of
-- one cluster that kept waiting frames: a JSON array of
-- {"layer", "name", "job", "reason", "detail", "waiting"}, at most a bounded
-- number of entries (more holds the count left out). A cluster whose layers
-- all found room has no row.
CREATE TABLE cuesched.cluster_wait (
    cluster     integer PRIMARY KEY REFERENCES cuesched.cluster (id) ON DELETE CASCADE,
    instance    integer     NOT NULL REFERENCES cuesched.instance (id) ON DELETE CASCADE,
    waits       jsonb       NOT NULL,
    more        integer     NOT NULL DEFAULT 0,
    reported_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cluster_wait_instance ON cuesched.cluster_wait (instance);
