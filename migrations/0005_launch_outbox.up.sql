-- The launch outbox: one row per booking, written in the booking transaction,
-- so that a crash between COMMIT and the launch on RQD loses nothing: the
-- instance that starts or takes the cluster over finds the rows still
-- pending and launches them (or releases the booking on a definite failure).
--
-- A row lives as long as its proc. A launched booking needs nothing more from
-- us, so no one polls for stale rows: the trigger below deletes the row in the
-- transaction that deletes the proc (Cuebot's release, or our compensation).
CREATE TABLE cuesched.launch_outbox (
    proc_id       varchar(36) PRIMARY KEY,      -- proc.pk_proc of the booking (RQD's resource_id)
    frame_id      varchar(36) NOT NULL,         -- frame.pk_frame
    frame_version integer     NOT NULL,         -- frame.int_version the booking left; compensation is guarded by it
    host_id       varchar(36) NOT NULL,         -- host.pk_host
    host_name     varchar(45) NOT NULL,         -- host.str_name, where RQD is reached
    cluster_id    integer     NOT NULL,         -- the cluster whose owner launches or releases it
    -- pending: committed, not yet launched (or the launch was cut short);
    -- unsure: a launch was sent and no verdict came back: kill before releasing;
    -- launched: RQD runs it (or said it already did);
    -- dry: booked under --dry-run, never launched.
    state         text        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'unsure', 'launched', 'dry')),
    attempts      integer     NOT NULL DEFAULT 0, -- launch calls whose outcome was recorded
    created_at    timestamptz NOT NULL DEFAULT current_timestamp,
    updated_at    timestamptz NOT NULL DEFAULT current_timestamp
);

-- What a starting or taking-over instance resolves, per cluster.
CREATE INDEX launch_outbox_unresolved ON cuesched.launch_outbox (cluster_id) WHERE state IN ('pending', 'unsure');

-- SECURITY DEFINER: the trigger runs inside Cuebot's transactions, whose role
-- need not have any right on schema cuesched.
CREATE FUNCTION cuesched.forget_launch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM cuesched.launch_outbox WHERE proc_id = OLD.pk_proc;
    RETURN NULL;
END $$;

CREATE TRIGGER cuesched_forget_launch AFTER DELETE ON public.proc
    FOR EACH ROW EXECUTE FUNCTION cuesched.forget_launch();
