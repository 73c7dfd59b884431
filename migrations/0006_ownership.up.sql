-- Instances that coordinate through this database alone (package ownership)
-- and the clusters they share out.
--
-- A live instance holds the session advisory lock (0x63750003, id) on its
-- coordination connection for its whole life, so its row and that lock
-- together say it is alive; lease_until catches an instance that is hung but
-- still connected.
CREATE TABLE cuesched.instance (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- second int of its liveness lock
    name        text        NOT NULL,
    host_name   text        NOT NULL,
    pid         integer     NOT NULL,
    -- application_name of every session of the instance: a survivor ends a
    -- hung instance's sessions by it (pg_terminate_backend).
    app_name    text        NOT NULL,
    -- its static restriction (facility, alloc-tags, manual-tags), resolved
    static      jsonb       NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);

-- One row per cluster (cluster.Key). A booking reads its cluster's row FOR
-- SHARE and books only while owner and epoch are the ones it acquired; every
-- change of owner updates the row (so it waits for the bookings in flight)
-- and bumps the epoch.
CREATE TABLE cuesched.cluster (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- second int of its booking lock
    key       text     NOT NULL UNIQUE,                          -- cluster.Key.String()
    kind      smallint NOT NULL CHECK (kind IN (1, 2)),          -- 1 allocation, 2 tag bucket
    facility  text     NOT NULL,                                 -- pk_facility
    alloc     text,                                              -- pk_alloc, kind 1
    alloc_tag text,                                              -- alloc.str_tag when last seen, kind 1
    bucket    integer,                                           -- kind 2
    owner     integer REFERENCES cuesched.instance (id) ON DELETE SET NULL,
    epoch     bigint   NOT NULL DEFAULT 0,
    CHECK ((kind = 1 AND alloc IS NOT NULL) OR (kind = 2 AND bucket IS NOT NULL))
);

CREATE INDEX cluster_owner ON cuesched.cluster (owner);

-- A move the leader asked for: the giver stops booking the cluster, then
-- sets owner = receiver (NULL: nobody may own it) and bumps the epoch. A
-- separate table, because writing to the cluster row would wait for the
-- giver's bookings in flight.
CREATE TABLE cuesched.handover (
    cluster  integer PRIMARY KEY REFERENCES cuesched.cluster (id) ON DELETE CASCADE,
    giver    integer NOT NULL REFERENCES cuesched.instance (id) ON DELETE CASCADE,
    receiver integer REFERENCES cuesched.instance (id) ON DELETE CASCADE
);

CREATE INDEX handover_giver ON cuesched.handover (giver);
CREATE INDEX handover_receiver ON cuesched.handover (receiver);
