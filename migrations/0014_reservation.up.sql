-- Reservations with backfill (issue 15): a host held for a frame of a layer
-- that waited for room (match/reserve.go). A host belongs to its
-- allocation's cluster and to tag buckets other instances may own, so the
-- reservation is a row here: written by the owner of the reserving layer's
-- cluster, read by every instance's matching and by every booking's re-check
-- (dispatch), which books another layer's frame on the host only when it is
-- expected to end before starts_at.
--
-- One row a host. The writer's fencing token is the cluster's (owner, epoch)
-- when it wrote, the pair every booking's fence checks: a row whose token
-- no longer matches its cluster's row was written by a former owner, and the
-- new owner, which reads its cluster's rows when it takes the cluster over,
-- keeps or drops them by the same rules as its own.
CREATE TABLE cuesched.reservation (
    host_id    varchar(36) PRIMARY KEY,  -- host.pk_host
    host_name  varchar(45) NOT NULL,     -- host.str_name, for explain and status
    layer_id   varchar(36) NOT NULL,     -- layer.pk_layer of the reserving layer
    layer_name text        NOT NULL,
    -- when the host is expected to have room for the layer's frame; NULL:
    -- unknown (a run time it depends on is), and nothing backfills there
    starts_at  timestamptz,
    cluster_id integer     NOT NULL REFERENCES cuesched.cluster (id) ON DELETE CASCADE,
    owner      integer     NOT NULL,     -- cuesched.instance.id of the writer
    epoch      bigint      NOT NULL,     -- the cluster's epoch the writer held
    -- when it was made (again, after it expired: match.Expired); nobody
    -- honours it ReserveMargin after its start, or its making for an
    -- unknown start
    created_at timestamptz NOT NULL DEFAULT current_timestamp
);

-- What an owner rewrites, and a taking-over owner reads, per cluster.
CREATE INDEX reservation_cluster ON cuesched.reservation (cluster_id);

INSERT INTO cuesched.migration (version, compatible, why) VALUES
    (14, true, 'adds the table cuesched.reservation, which the release before it neither reads nor writes: beside the new release it books on reserved hosts as on any, which breaks no rule');
