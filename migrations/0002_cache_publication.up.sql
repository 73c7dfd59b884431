-- The host cache's change stream: cuesched's replication consumer reads this
-- publication (pgoutput) from a temporary slot. It names only the columns the
-- cache reads (PostgreSQL 15 column lists), each list holding its table's
-- primary key, because every published row is decoded once per instance.
--
-- limit_record and layer_limit are left out on purpose: they have no primary
-- key, and PostgreSQL refuses UPDATE and DELETE on a table published for
-- them without a replica identity, which would break Cuebot's own writes.
-- The cache reads them by query instead (0003 notifies their changes).
-- folder is not needed: a job's folder comes with job, a folder's caps with
-- folder_resource.
-- Replica identities stay Cuebot's defaults: a delete carries the key only.
CREATE PUBLICATION cuesched_cache FOR TABLE
    alloc (pk_alloc, pk_facility, str_tag),
    host (pk_host, pk_alloc, str_name, str_lock_state, int_cores, int_cores_idle, int_mem, int_mem_idle,
          int_gpus, int_gpus_idle, int_gpu_mem, int_gpu_mem_idle, int_thread_mode),
    host_stat (pk_host_stat, pk_host, int_mem_free, int_mcp_total, int_mcp_free, ts_ping, str_state, str_os,
               int_gpu_mem_free),
    host_tag (pk_host_tag, pk_host, str_tag),
    show (pk_show, b_active, b_scheduler_managed),
    subscription (pk_subscription, pk_show, pk_alloc, int_size, int_burst),
    folder_resource (pk_folder_resource, pk_folder, int_max_cores, int_max_gpus),
    job (pk_job, pk_show, pk_folder, pk_dept),
    job_resource (pk_job_resource, pk_job, int_max_cores, int_max_gpus),
    layer (pk_layer, pk_job),
    proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved, int_gpus_reserved);
