-- Generated from catalog/*.tsv by the lead's one-off script; the catalog test (catalog_test.go)
-- checks the live schema against the catalog, so edit both together.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

CREATE TABLE public.alloc (
    pk_alloc varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    b_allow_edit boolean DEFAULT true NOT NULL,
    b_default boolean DEFAULT false NOT NULL,
    str_tag varchar(24),
    b_billable boolean DEFAULT true NOT NULL,
    pk_facility varchar(36) NOT NULL,
    b_enabled boolean DEFAULT true
);

CREATE TABLE public.config (
    pk_config varchar(36) NOT NULL,
    str_key varchar(36) NOT NULL,
    int_value bigint DEFAULT 0,
    long_value bigint DEFAULT 0,
    str_value varchar(255) DEFAULT ''::character varying,
    b_value boolean DEFAULT false
);

CREATE TABLE public.dept (
    pk_dept varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    b_default boolean DEFAULT false NOT NULL
);

CREATE TABLE public.facility (
    pk_facility varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    b_default boolean DEFAULT false NOT NULL
);

CREATE TABLE public.folder (
    pk_folder varchar(36) NOT NULL,
    pk_parent_folder varchar(36),
    pk_show varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    int_priority bigint DEFAULT 1 NOT NULL,
    b_default boolean DEFAULT false NOT NULL,
    pk_dept varchar(36) NOT NULL,
    int_job_min_cores integer DEFAULT '-1'::integer NOT NULL,
    int_job_max_cores integer DEFAULT '-1'::integer NOT NULL,
    int_job_priority integer DEFAULT '-1'::integer NOT NULL,
    int_min_cores integer DEFAULT 0 NOT NULL,
    int_max_cores integer DEFAULT '-1'::integer NOT NULL,
    b_exclude_managed boolean DEFAULT false NOT NULL,
    f_order integer DEFAULT 0 NOT NULL,
    int_job_min_gpus integer DEFAULT '-1'::integer NOT NULL,
    int_job_max_gpus integer DEFAULT '-1'::integer NOT NULL,
    int_min_gpus integer DEFAULT 0 NOT NULL,
    int_max_gpus integer DEFAULT '-1'::integer NOT NULL
);

CREATE TABLE public.folder_level (
    pk_folder_level varchar(36) NOT NULL,
    pk_folder varchar(36) NOT NULL,
    int_level bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.folder_resource (
    pk_folder_resource varchar(36) NOT NULL,
    pk_folder varchar(36) NOT NULL,
    int_cores integer DEFAULT 0 NOT NULL,
    int_max_cores integer DEFAULT '-1'::integer NOT NULL,
    int_min_cores integer DEFAULT 0 NOT NULL,
    float_tier numeric DEFAULT 0 NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_max_gpus integer DEFAULT '-1'::integer NOT NULL,
    int_min_gpus integer DEFAULT 0 NOT NULL
);

CREATE TABLE public.frame (
    pk_frame varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    str_name varchar(256) NOT NULL,
    str_state varchar(24) NOT NULL,
    int_number bigint NOT NULL,
    int_depend_count bigint DEFAULT 0 NOT NULL,
    int_exit_status bigint DEFAULT '-1'::integer NOT NULL,
    int_retries bigint DEFAULT 0 NOT NULL,
    int_mem_reserved bigint DEFAULT 0 NOT NULL,
    int_mem_max_used bigint DEFAULT 0 NOT NULL,
    int_mem_used bigint DEFAULT 0 NOT NULL,
    int_dispatch_order bigint DEFAULT 0 NOT NULL,
    str_host varchar(256),
    int_cores integer DEFAULT 0 NOT NULL,
    int_layer_order integer NOT NULL,
    ts_started timestamp(6) with time zone,
    ts_stopped timestamp(6) with time zone,
    ts_last_run timestamp(6) with time zone,
    ts_updated timestamp(6) with time zone,
    int_version integer DEFAULT 0,
    str_checkpoint_state varchar(12) DEFAULT 'DISABLED'::character varying NOT NULL,
    int_checkpoint_count smallint DEFAULT 0 NOT NULL,
    int_gpu_mem_reserved bigint DEFAULT 0 NOT NULL,
    int_total_past_core_time integer DEFAULT 0 NOT NULL,
    ts_llu timestamp(6) with time zone,
    int_gpu_mem_used bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max_used bigint DEFAULT 0 NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_total_past_gpu_time integer DEFAULT 0 NOT NULL,
    int_pss_max_used bigint DEFAULT 0,
    int_pss_used bigint DEFAULT 0,
    ts_eligible timestamp(6) with time zone DEFAULT NULL::timestamp with time zone
);

CREATE TABLE public.frame_history (
    pk_frame_history varchar(36) DEFAULT uuid_generate_v1() NOT NULL,
    pk_frame varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    str_name varchar(256) NOT NULL,
    str_state varchar(24) NOT NULL,
    int_mem_reserved bigint DEFAULT 0 NOT NULL,
    int_mem_max_used bigint DEFAULT 0 NOT NULL,
    int_cores integer DEFAULT 100 NOT NULL,
    str_host varchar(64) DEFAULT NULL::character varying,
    int_exit_status smallint DEFAULT '-1'::integer NOT NULL,
    pk_alloc varchar(36),
    int_ts_started integer NOT NULL,
    int_ts_stopped integer DEFAULT 0 NOT NULL,
    int_checkpoint_count integer DEFAULT 0 NOT NULL,
    dt_last_modified date NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_gpu_mem_reserved bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max_used bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.host (
    pk_host varchar(36) NOT NULL,
    pk_alloc varchar(36) NOT NULL,
    str_name varchar(45) NOT NULL,
    str_lock_state varchar(36) NOT NULL,
    b_nimby boolean DEFAULT false NOT NULL,
    ts_created timestamp(6) without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    int_cores bigint DEFAULT 0 NOT NULL,
    int_procs bigint DEFAULT 0 NOT NULL,
    int_cores_idle bigint DEFAULT 0 NOT NULL,
    int_mem bigint DEFAULT 0 NOT NULL,
    int_mem_idle bigint DEFAULT 0 NOT NULL,
    b_unlock_boot boolean DEFAULT false NOT NULL,
    b_unlock_idle boolean DEFAULT false NOT NULL,
    b_reboot_idle boolean DEFAULT false NOT NULL,
    str_tags varchar(128),
    str_fqdn varchar(128),
    b_comment boolean DEFAULT false NOT NULL,
    int_thread_mode integer DEFAULT 0 NOT NULL,
    str_lock_source varchar(128),
    int_gpu_mem bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_idle bigint DEFAULT 0 NOT NULL,
    int_gpus bigint DEFAULT 0 NOT NULL,
    int_gpus_idle bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.host_stat (
    pk_host_stat varchar(36) NOT NULL,
    pk_host varchar(36) NOT NULL,
    int_mem_total bigint DEFAULT 0 NOT NULL,
    int_mem_free bigint DEFAULT 0 NOT NULL,
    int_swap_total bigint DEFAULT 0 NOT NULL,
    int_swap_free bigint DEFAULT 0 NOT NULL,
    int_mcp_total bigint DEFAULT 0 NOT NULL,
    int_mcp_free bigint DEFAULT 0 NOT NULL,
    int_load bigint DEFAULT 0 NOT NULL,
    ts_ping timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ts_booted timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    str_state varchar(32) DEFAULT 'UP'::character varying NOT NULL,
    str_os varchar(32) DEFAULT 'rhel40'::character varying NOT NULL,
    int_gpu_mem_total bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_free bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.host_tag (
    pk_host_tag varchar(36) NOT NULL,
    pk_host varchar(36) NOT NULL,
    str_tag varchar(45) NOT NULL,
    str_tag_type varchar(24) DEFAULT 'Hardware'::character varying NOT NULL,
    b_constant boolean DEFAULT false NOT NULL
);

CREATE TABLE public.job (
    pk_job varchar(36) NOT NULL,
    pk_folder varchar(36) NOT NULL,
    pk_show varchar(36) NOT NULL,
    str_name varchar(255) NOT NULL,
    str_visible_name varchar(255),
    str_shot varchar(64) NOT NULL,
    str_user varchar(32) NOT NULL,
    str_state varchar(16) NOT NULL,
    str_log_dir varchar(4000) DEFAULT ''::character varying NOT NULL,
    int_uid bigint,
    b_paused boolean DEFAULT false NOT NULL,
    b_autoeat boolean DEFAULT false NOT NULL,
    int_frame_count integer DEFAULT 0 NOT NULL,
    int_layer_count integer DEFAULT 0 NOT NULL,
    int_max_retries smallint DEFAULT 3 NOT NULL,
    b_auto_book boolean DEFAULT true NOT NULL,
    b_auto_unbook boolean DEFAULT true NOT NULL,
    b_comment boolean DEFAULT false NOT NULL,
    str_email varchar(256),
    pk_facility varchar(36) NOT NULL,
    pk_dept varchar(36) NOT NULL,
    ts_started timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ts_stopped timestamp(6) with time zone,
    int_min_cores integer DEFAULT 100 NOT NULL,
    int_max_cores integer DEFAULT 20000 NOT NULL,
    str_show varchar(512) DEFAULT 'none'::character varying NOT NULL,
    ts_updated timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    str_os varchar(12),
    int_min_gpus integer DEFAULT 0 NOT NULL,
    int_max_gpus integer DEFAULT 100000 NOT NULL,
    str_loki_url varchar(256),
    ts_eligible timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL
);

CREATE TABLE public.job_env (
    pk_job_env varchar(36) NOT NULL,
    pk_job varchar(36),
    str_key varchar(2048),
    str_value varchar(2048)
);

CREATE TABLE public.job_history (
    pk_job varchar(36) NOT NULL,
    pk_show varchar(36) NOT NULL,
    str_name varchar(512) NOT NULL,
    str_shot varchar(64) NOT NULL,
    str_user varchar(36) NOT NULL,
    int_core_time_success bigint DEFAULT 0 NOT NULL,
    int_core_time_fail bigint DEFAULT 0 NOT NULL,
    int_frame_count bigint DEFAULT 0 NOT NULL,
    int_layer_count bigint DEFAULT 0 NOT NULL,
    int_waiting_count bigint DEFAULT 0 NOT NULL,
    int_dead_count bigint DEFAULT 0 NOT NULL,
    int_depend_count bigint DEFAULT 0 NOT NULL,
    int_eaten_count bigint DEFAULT 0 NOT NULL,
    int_succeeded_count bigint DEFAULT 0 NOT NULL,
    int_running_count bigint DEFAULT 0 NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    b_archived boolean DEFAULT false NOT NULL,
    pk_facility varchar(36) NOT NULL,
    pk_dept varchar(36) NOT NULL,
    int_ts_started integer NOT NULL,
    int_ts_stopped integer DEFAULT 0 NOT NULL,
    dt_last_modified date NOT NULL,
    int_gpu_time_success bigint DEFAULT 0 NOT NULL,
    int_gpu_time_fail bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.job_mem (
    pk_job_mem varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    int_max_vss bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL,
    int_max_pss bigint DEFAULT 0
);

CREATE TABLE public.job_resource (
    pk_job_resource varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_cores bigint DEFAULT 0 NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    int_max_vss bigint DEFAULT 0 NOT NULL,
    int_min_cores integer DEFAULT 100 NOT NULL,
    int_max_cores integer DEFAULT 10000 NOT NULL,
    float_tier numeric DEFAULT 0 NOT NULL,
    int_priority integer DEFAULT 1 NOT NULL,
    int_local_cores integer DEFAULT 0 NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_min_gpus integer DEFAULT 0 NOT NULL,
    int_max_gpus integer DEFAULT 100 NOT NULL,
    int_local_gpus integer DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL,
    int_max_pss bigint DEFAULT 0
);

CREATE TABLE public.job_stat (
    pk_job_stat varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_waiting_count bigint DEFAULT 0 NOT NULL,
    int_running_count bigint DEFAULT 0 NOT NULL,
    int_dead_count bigint DEFAULT 0 NOT NULL,
    int_depend_count bigint DEFAULT 0 NOT NULL,
    int_eaten_count bigint DEFAULT 0 NOT NULL,
    int_succeeded_count bigint DEFAULT 0 NOT NULL,
    int_checkpoint_count bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.job_usage (
    pk_job_usage varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_core_time_success bigint DEFAULT 0 NOT NULL,
    int_core_time_fail bigint DEFAULT 0 NOT NULL,
    int_frame_success_count integer DEFAULT 0 NOT NULL,
    int_frame_fail_count integer DEFAULT 0 NOT NULL,
    int_clock_time_fail integer DEFAULT 0 NOT NULL,
    int_clock_time_high integer DEFAULT 0 NOT NULL,
    int_clock_time_success integer DEFAULT 0 NOT NULL,
    int_gpu_time_success bigint DEFAULT 0 NOT NULL,
    int_gpu_time_fail bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.layer (
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    str_name varchar(256) NOT NULL,
    str_cmd varchar(4000) NOT NULL,
    str_range varchar(4000) NOT NULL,
    int_chunk_size bigint DEFAULT 1 NOT NULL,
    int_dispatch_order bigint DEFAULT 1 NOT NULL,
    int_cores_min bigint DEFAULT 100 NOT NULL,
    int_mem_min bigint DEFAULT 4194304 NOT NULL,
    str_tags varchar(4000) DEFAULT ''::character varying NOT NULL,
    str_type varchar(16) NOT NULL,
    b_threadable boolean DEFAULT true NOT NULL,
    str_services varchar(128) DEFAULT 'default'::character varying NOT NULL,
    b_optimize boolean DEFAULT true NOT NULL,
    int_cores_max integer DEFAULT 0 NOT NULL,
    int_gpu_mem_min bigint DEFAULT 0 NOT NULL,
    int_timeout integer DEFAULT 0 NOT NULL,
    int_timeout_llu integer DEFAULT 0 NOT NULL,
    int_gpus_min bigint DEFAULT 0 NOT NULL,
    int_gpus_max bigint DEFAULT 0 NOT NULL,
    ts_eligible timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ts_start_after timestamp(6) with time zone DEFAULT NULL::timestamp with time zone,
    str_start_after_reason varchar(255) DEFAULT NULL::character varying
);

CREATE TABLE public.layer_env (
    pk_layer_env varchar(36) NOT NULL,
    pk_layer varchar(36),
    pk_job varchar(36),
    str_key varchar(2048),
    str_value varchar(2048)
);

CREATE TABLE public.layer_history (
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    str_name varchar(512) NOT NULL,
    str_type varchar(16) NOT NULL,
    int_cores_min bigint DEFAULT 100 NOT NULL,
    int_mem_min bigint DEFAULT 4194304 NOT NULL,
    int_core_time_success bigint DEFAULT 0 NOT NULL,
    int_core_time_fail bigint DEFAULT 0 NOT NULL,
    int_frame_count bigint DEFAULT 0 NOT NULL,
    int_layer_count bigint DEFAULT 0 NOT NULL,
    int_waiting_count bigint DEFAULT 0 NOT NULL,
    int_dead_count bigint DEFAULT 0 NOT NULL,
    int_depend_count bigint DEFAULT 0 NOT NULL,
    int_eaten_count bigint DEFAULT 0 NOT NULL,
    int_succeeded_count bigint DEFAULT 0 NOT NULL,
    int_running_count bigint DEFAULT 0 NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    b_archived boolean DEFAULT false NOT NULL,
    dt_last_modified date NOT NULL,
    str_services varchar(128),
    int_gpus_min integer DEFAULT 0 NOT NULL,
    int_gpu_time_success bigint DEFAULT 0 NOT NULL,
    int_gpu_time_fail bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_min bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.layer_limit (
    pk_layer_limit varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_limit_record varchar(36) NOT NULL
);

CREATE TABLE public.layer_mem (
    pk_layer_mem varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    int_max_vss bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL,
    int_max_pss bigint DEFAULT 0
);

CREATE TABLE public.layer_resource (
    pk_layer_resource varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_cores bigint DEFAULT 0 NOT NULL,
    int_max_rss bigint DEFAULT 0 NOT NULL,
    int_max_vss bigint DEFAULT 0 NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_gpu_mem_max bigint DEFAULT 0 NOT NULL,
    int_max_pss bigint DEFAULT 0
);

CREATE TABLE public.layer_stat (
    pk_layer_stat varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_total_count bigint DEFAULT 0 NOT NULL,
    int_waiting_count bigint DEFAULT 0 NOT NULL,
    int_running_count bigint DEFAULT 0 NOT NULL,
    int_dead_count bigint DEFAULT 0 NOT NULL,
    int_depend_count bigint DEFAULT 0 NOT NULL,
    int_eaten_count bigint DEFAULT 0 NOT NULL,
    int_succeeded_count bigint DEFAULT 0 NOT NULL,
    int_checkpoint_count bigint DEFAULT 0 NOT NULL,
    ts_started timestamp(6) with time zone,
    ts_stopped timestamp(6) with time zone
);

CREATE TABLE public.layer_usage (
    pk_layer_usage varchar(36) NOT NULL,
    pk_layer varchar(36) NOT NULL,
    pk_job varchar(36) NOT NULL,
    int_core_time_success bigint DEFAULT 0 NOT NULL,
    int_core_time_fail bigint DEFAULT 0 NOT NULL,
    int_frame_success_count integer DEFAULT 0 NOT NULL,
    int_frame_fail_count integer DEFAULT 0 NOT NULL,
    int_clock_time_fail integer DEFAULT 0 NOT NULL,
    int_clock_time_high integer DEFAULT 0 NOT NULL,
    int_clock_time_low integer DEFAULT 0 NOT NULL,
    int_clock_time_success integer DEFAULT 0 NOT NULL,
    int_gpu_time_success bigint DEFAULT 0 NOT NULL,
    int_gpu_time_fail bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.limit_record (
    pk_limit_record varchar(36) NOT NULL,
    str_name varchar(255) NOT NULL,
    int_max_value integer,
    b_host_limit boolean DEFAULT false NOT NULL
);

CREATE TABLE public.point (
    pk_point varchar(36) NOT NULL,
    pk_dept varchar(36) NOT NULL,
    pk_show varchar(36) NOT NULL,
    str_ti_task varchar(36),
    int_cores integer DEFAULT 0 NOT NULL,
    b_managed boolean DEFAULT false NOT NULL,
    int_min_cores integer DEFAULT 0 NOT NULL,
    float_tier numeric DEFAULT 0 NOT NULL,
    ts_updated timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL,
    int_min_gpus integer DEFAULT 0 NOT NULL
);

CREATE TABLE public.proc (
    pk_proc varchar(36) NOT NULL,
    pk_host varchar(36) NOT NULL,
    pk_job varchar(36),
    pk_show varchar(36),
    pk_layer varchar(36),
    pk_frame varchar(36),
    int_cores_reserved bigint NOT NULL,
    int_mem_reserved bigint NOT NULL,
    int_mem_used bigint DEFAULT 0 NOT NULL,
    int_mem_max_used bigint DEFAULT 0 NOT NULL,
    b_unbooked boolean DEFAULT false NOT NULL,
    int_mem_pre_reserved bigint DEFAULT 0 NOT NULL,
    int_virt_used bigint DEFAULT 0 NOT NULL,
    int_virt_max_used bigint DEFAULT 0 NOT NULL,
    str_redirect varchar(265),
    b_local boolean DEFAULT false NOT NULL,
    ts_ping timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ts_booked timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ts_dispatched timestamp(6) with time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    int_gpu_mem_reserved bigint DEFAULT 0 NOT NULL,
    int_gpus_reserved integer DEFAULT 0 NOT NULL,
    int_gpu_mem_used bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_max_used bigint DEFAULT 0 NOT NULL,
    int_gpu_mem_pre_reserved bigint DEFAULT 0 NOT NULL,
    bytea_children bytea,
    int_swap_used bigint DEFAULT 0 NOT NULL,
    int_pss_max_used bigint DEFAULT 0,
    int_pss_used bigint DEFAULT 0
);

CREATE TABLE public.service (
    pk_service varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    b_threadable boolean NOT NULL,
    int_cores_min integer NOT NULL,
    int_mem_min integer NOT NULL,
    str_tags varchar(128) NOT NULL,
    int_cores_max integer DEFAULT 0 NOT NULL,
    int_gpu_mem_min bigint DEFAULT 0 NOT NULL,
    int_timeout integer DEFAULT 0 NOT NULL,
    int_timeout_llu integer DEFAULT 0 NOT NULL,
    int_gpus_min integer DEFAULT 0 NOT NULL,
    int_gpus_max integer DEFAULT 0 NOT NULL,
    int_min_memory_increase integer DEFAULT 2097152 NOT NULL
);

CREATE TABLE public.show (
    pk_show varchar(36) NOT NULL,
    str_name varchar(512) NOT NULL,
    b_paused boolean DEFAULT false NOT NULL,
    int_default_min_cores integer DEFAULT 100 NOT NULL,
    int_default_max_cores integer DEFAULT 10000 NOT NULL,
    b_booking_enabled boolean DEFAULT true NOT NULL,
    b_dispatch_enabled boolean DEFAULT true NOT NULL,
    b_active boolean DEFAULT true NOT NULL,
    str_comment_email varchar(1024),
    int_default_min_gpus integer DEFAULT 100 NOT NULL,
    int_default_max_gpus integer DEFAULT 100000 NOT NULL,
    b_scheduler_managed boolean DEFAULT false NOT NULL
);

CREATE TABLE public.show_service (
    pk_show_service varchar(36) NOT NULL,
    pk_show varchar(36) NOT NULL,
    str_name varchar(36) NOT NULL,
    b_threadable boolean NOT NULL,
    int_cores_min integer NOT NULL,
    int_mem_min integer NOT NULL,
    str_tags varchar(128) NOT NULL,
    int_cores_max integer DEFAULT 0 NOT NULL,
    int_gpu_mem_min bigint DEFAULT 0 NOT NULL,
    int_timeout integer DEFAULT 0 NOT NULL,
    int_timeout_llu integer DEFAULT 0 NOT NULL,
    int_gpus_min integer DEFAULT 0 NOT NULL,
    int_gpus_max integer DEFAULT 0 NOT NULL,
    int_min_memory_increase integer DEFAULT 2097152 NOT NULL
);

CREATE TABLE public.show_stats (
    pk_show varchar(36) NOT NULL,
    int_frame_insert_count bigint DEFAULT 0 NOT NULL,
    int_job_insert_count bigint DEFAULT 0 NOT NULL,
    int_frame_success_count bigint DEFAULT 0 NOT NULL,
    int_frame_fail_count bigint DEFAULT 0 NOT NULL
);

CREATE TABLE public.subscription (
    pk_subscription varchar(36) NOT NULL,
    pk_alloc varchar(36) NOT NULL,
    pk_show varchar(36) NOT NULL,
    int_size bigint DEFAULT 0 NOT NULL,
    int_burst bigint DEFAULT 0 NOT NULL,
    int_cores integer DEFAULT 0 NOT NULL,
    float_tier numeric DEFAULT 0 NOT NULL,
    int_gpus integer DEFAULT 0 NOT NULL
);

ALTER TABLE ONLY public.alloc ADD CONSTRAINT c_alloc_pk PRIMARY KEY (pk_alloc);
ALTER TABLE ONLY public.config ADD CONSTRAINT c_pk_pkconfig PRIMARY KEY (pk_config);
ALTER TABLE ONLY public.dept ADD CONSTRAINT c_dept_pk PRIMARY KEY (pk_dept);
ALTER TABLE ONLY public.facility ADD CONSTRAINT c_facility_pk PRIMARY KEY (pk_facility);
ALTER TABLE ONLY public.folder ADD CONSTRAINT c_folder_pk PRIMARY KEY (pk_folder);
ALTER TABLE ONLY public.folder_level ADD CONSTRAINT c_folder_level_pk PRIMARY KEY (pk_folder_level);
ALTER TABLE ONLY public.folder_resource ADD CONSTRAINT c_folder_resource_pk PRIMARY KEY (pk_folder_resource);
ALTER TABLE ONLY public.frame ADD CONSTRAINT c_frame_pk PRIMARY KEY (pk_frame);
ALTER TABLE ONLY public.frame_history ADD CONSTRAINT c_frame_history_pk PRIMARY KEY (pk_frame_history);
ALTER TABLE ONLY public.host ADD CONSTRAINT c_host_pk PRIMARY KEY (pk_host);
ALTER TABLE ONLY public.host_stat ADD CONSTRAINT c_hoststat_pk PRIMARY KEY (pk_host_stat);
ALTER TABLE ONLY public.host_tag ADD CONSTRAINT c_host_tag_pk PRIMARY KEY (pk_host_tag);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_pk PRIMARY KEY (pk_job);
ALTER TABLE ONLY public.job_env ADD CONSTRAINT c_job_env_pk PRIMARY KEY (pk_job_env);
ALTER TABLE ONLY public.job_history ADD CONSTRAINT c_job_history_pk PRIMARY KEY (pk_job);
ALTER TABLE ONLY public.job_mem ADD CONSTRAINT c_job_mem_pk PRIMARY KEY (pk_job_mem);
ALTER TABLE ONLY public.job_resource ADD CONSTRAINT c_job_resource_pk PRIMARY KEY (pk_job_resource);
ALTER TABLE ONLY public.job_stat ADD CONSTRAINT c_job_stat_pk PRIMARY KEY (pk_job_stat);
ALTER TABLE ONLY public.job_usage ADD CONSTRAINT c_job_usage_pk PRIMARY KEY (pk_job_usage);
ALTER TABLE ONLY public.layer ADD CONSTRAINT c_layer_pk PRIMARY KEY (pk_layer);
ALTER TABLE ONLY public.layer_env ADD CONSTRAINT c_layer_env_pk PRIMARY KEY (pk_layer_env);
ALTER TABLE ONLY public.layer_history ADD CONSTRAINT c_layer_history_pk PRIMARY KEY (pk_layer);
ALTER TABLE ONLY public.layer_mem ADD CONSTRAINT c_layer_mem_pk PRIMARY KEY (pk_layer_mem);
ALTER TABLE ONLY public.layer_resource ADD CONSTRAINT c_layerresource_pk PRIMARY KEY (pk_layer_resource);
ALTER TABLE ONLY public.layer_stat ADD CONSTRAINT c_layerstat_pk PRIMARY KEY (pk_layer_stat);
ALTER TABLE ONLY public.layer_usage ADD CONSTRAINT c_layer_usage_pk PRIMARY KEY (pk_layer_usage);
ALTER TABLE ONLY public.point ADD CONSTRAINT c_point_pk PRIMARY KEY (pk_point);
ALTER TABLE ONLY public.proc ADD CONSTRAINT c_proc_pk PRIMARY KEY (pk_proc);
ALTER TABLE ONLY public.service ADD CONSTRAINT c_pk_service PRIMARY KEY (pk_service);
ALTER TABLE ONLY public.show ADD CONSTRAINT c_show_pk PRIMARY KEY (pk_show);
ALTER TABLE ONLY public.show_service ADD CONSTRAINT c_pk_show_service PRIMARY KEY (pk_show_service);
ALTER TABLE ONLY public.show_stats ADD CONSTRAINT c_show_stats_pk PRIMARY KEY (pk_show);
ALTER TABLE ONLY public.subscription ADD CONSTRAINT c_subscription_pk PRIMARY KEY (pk_subscription);

ALTER TABLE ONLY public.alloc ADD CONSTRAINT c_alloc_name_uniq UNIQUE (str_name);
ALTER TABLE ONLY public.config ADD CONSTRAINT c_show_uk UNIQUE (str_key);
ALTER TABLE ONLY public.folder ADD CONSTRAINT c_folder_uk UNIQUE (pk_parent_folder, str_name);
ALTER TABLE ONLY public.folder_level ADD CONSTRAINT c_folder_level_uk UNIQUE (pk_folder);
ALTER TABLE ONLY public.frame ADD CONSTRAINT c_frame_str_name_unq UNIQUE (str_name, pk_job);
ALTER TABLE ONLY public.host ADD CONSTRAINT c_host_uk UNIQUE (str_name);
ALTER TABLE ONLY public.host ADD CONSTRAINT c_str_host_fqdn_uk UNIQUE (str_fqdn);
ALTER TABLE ONLY public.host_stat ADD CONSTRAINT c_host_stat_pk_host_uk UNIQUE (pk_host);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_uk UNIQUE (str_visible_name);
ALTER TABLE ONLY public.job_resource ADD CONSTRAINT c_job_resource_uk UNIQUE (pk_job);
ALTER TABLE ONLY public.job_usage ADD CONSTRAINT c_job_usage_pk_job_uniq UNIQUE (pk_job);
ALTER TABLE ONLY public.layer ADD CONSTRAINT c_layer_str_name_unq UNIQUE (str_name, pk_job);
ALTER TABLE ONLY public.layer_resource ADD CONSTRAINT c_layerresource_uk UNIQUE (pk_layer);
ALTER TABLE ONLY public.layer_usage ADD CONSTRAINT c_layer_usage_pk_layer_uk UNIQUE (pk_layer);
ALTER TABLE ONLY public.point ADD CONSTRAINT c_point_pk_show_dept UNIQUE (pk_show, pk_dept);
ALTER TABLE ONLY public.proc ADD CONSTRAINT c_proc_uk UNIQUE (pk_frame);
ALTER TABLE ONLY public.subscription ADD CONSTRAINT c_subscription_uk UNIQUE (pk_show, pk_alloc);

ALTER TABLE ONLY public.alloc ADD CONSTRAINT c_alloc_pk_facility FOREIGN KEY (pk_facility) REFERENCES facility(pk_facility);
ALTER TABLE ONLY public.folder ADD CONSTRAINT c_folder_pk_dept FOREIGN KEY (pk_dept) REFERENCES dept(pk_dept);
ALTER TABLE ONLY public.folder ADD CONSTRAINT c_folder_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);
ALTER TABLE ONLY public.folder_level ADD CONSTRAINT c_folder_level_pk_folder FOREIGN KEY (pk_folder) REFERENCES folder(pk_folder);
ALTER TABLE ONLY public.folder_resource ADD CONSTRAINT c_folder_resource_pk_folder FOREIGN KEY (pk_folder) REFERENCES folder(pk_folder);
ALTER TABLE ONLY public.frame ADD CONSTRAINT c_frame_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.frame ADD CONSTRAINT c_frame_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.frame_history ADD CONSTRAINT c_frame_history_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES alloc(pk_alloc);
ALTER TABLE ONLY public.frame_history ADD CONSTRAINT c_frame_history_pk_job FOREIGN KEY (pk_job) REFERENCES job_history(pk_job) ON DELETE CASCADE;
ALTER TABLE ONLY public.frame_history ADD CONSTRAINT c_frame_history_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer_history(pk_layer) ON DELETE CASCADE;
ALTER TABLE ONLY public.host ADD CONSTRAINT c_host_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES alloc(pk_alloc);
ALTER TABLE ONLY public.host_stat ADD CONSTRAINT c_host_stat_pk_host FOREIGN KEY (pk_host) REFERENCES host(pk_host);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_pk_dept FOREIGN KEY (pk_dept) REFERENCES dept(pk_dept);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_pk_facility FOREIGN KEY (pk_facility) REFERENCES facility(pk_facility);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_pk_folder FOREIGN KEY (pk_folder) REFERENCES folder(pk_folder);
ALTER TABLE ONLY public.job ADD CONSTRAINT c_job_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);
ALTER TABLE ONLY public.job_env ADD CONSTRAINT c_job_env_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.job_history ADD CONSTRAINT c_job_history_pk_dept FOREIGN KEY (pk_dept) REFERENCES dept(pk_dept);
ALTER TABLE ONLY public.job_history ADD CONSTRAINT c_job_history_pk_facility FOREIGN KEY (pk_facility) REFERENCES facility(pk_facility);
ALTER TABLE ONLY public.job_history ADD CONSTRAINT c_job_history_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);
ALTER TABLE ONLY public.job_mem ADD CONSTRAINT c_job_mem_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.job_resource ADD CONSTRAINT c_job_resource_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.job_stat ADD CONSTRAINT c_job_stat_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.job_usage ADD CONSTRAINT c_job_usage_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer ADD CONSTRAINT c_layer_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_env ADD CONSTRAINT c_layer_env_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_env ADD CONSTRAINT c_layer_env_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.layer_history ADD CONSTRAINT c_layer_history_pk_job FOREIGN KEY (pk_job) REFERENCES job_history(pk_job) ON DELETE CASCADE;
ALTER TABLE ONLY public.layer_mem ADD CONSTRAINT c_layer_mem_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_mem ADD CONSTRAINT c_layer_mem_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.layer_resource ADD CONSTRAINT c_layer_resource_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_resource ADD CONSTRAINT c_layer_resource_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.layer_stat ADD CONSTRAINT c_layer_stat_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_stat ADD CONSTRAINT c_layer_stat_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.layer_usage ADD CONSTRAINT c_layer_usage_pk_job FOREIGN KEY (pk_job) REFERENCES job(pk_job);
ALTER TABLE ONLY public.layer_usage ADD CONSTRAINT c_layer_usage_pk_layer FOREIGN KEY (pk_layer) REFERENCES layer(pk_layer);
ALTER TABLE ONLY public.point ADD CONSTRAINT c_point_pk_dept FOREIGN KEY (pk_dept) REFERENCES dept(pk_dept);
ALTER TABLE ONLY public.point ADD CONSTRAINT c_point_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);
ALTER TABLE ONLY public.proc ADD CONSTRAINT c_proc_pk_frame FOREIGN KEY (pk_frame) REFERENCES frame(pk_frame);
ALTER TABLE ONLY public.proc ADD CONSTRAINT c_proc_pk_host FOREIGN KEY (pk_host) REFERENCES host(pk_host);
ALTER TABLE ONLY public.show_service ADD CONSTRAINT c_show_service_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);
ALTER TABLE ONLY public.subscription ADD CONSTRAINT c_subscription_pk_alloc FOREIGN KEY (pk_alloc) REFERENCES alloc(pk_alloc);
ALTER TABLE ONLY public.subscription ADD CONSTRAINT c_subscription_pk_show FOREIGN KEY (pk_show) REFERENCES show(pk_show);

CREATE INDEX i_frame_depend_candidates ON public.frame USING btree (pk_job, pk_layer, pk_frame) WHERE (((str_state)::text = 'DEPEND'::text) AND (int_depend_count > 0));
CREATE INDEX i_frame_dispatch_idx ON public.frame USING btree (int_dispatch_order, int_layer_order);
CREATE INDEX i_frame_int_gpu_mem_reserved ON public.frame USING btree (int_gpu_mem_reserved);
CREATE INDEX i_frame_pk_job ON public.frame USING btree (pk_job);
CREATE INDEX i_frame_pkjoblayer ON public.frame USING btree (pk_layer);
CREATE INDEX i_frame_state_job ON public.frame USING btree (str_state, pk_job);
CREATE INDEX i_host_int_gpu ON public.host USING btree (int_gpu_mem);
CREATE INDEX i_host_int_gpu_idle ON public.host USING btree (int_gpu_mem_idle);
CREATE INDEX i_host_int_gpu_mem ON public.host USING btree (int_gpu_mem);
CREATE INDEX i_host_int_gpu_mem_idle ON public.host USING btree (int_gpu_mem_idle);
CREATE INDEX i_host_int_gpus ON public.host USING btree (int_gpus);
CREATE INDEX i_host_int_gpus_idle ON public.host USING btree (int_gpus_idle);
CREATE INDEX i_host_pkalloc ON public.host USING btree (pk_alloc);
CREATE INDEX i_host_str_tags ON public.host USING btree (str_tags);
CREATE INDEX i_host_strlockstate ON public.host USING btree (str_lock_state);
CREATE INDEX i_host_stat_int_gpu_mem_free ON public.host_stat USING btree (int_gpu_mem_free);
CREATE INDEX i_host_stat_int_gpu_mem_total ON public.host_stat USING btree (int_gpu_mem_total);
CREATE INDEX i_host_stat_str_os ON public.host_stat USING btree (str_os);
CREATE INDEX i_host_str_tag_type ON public.host_tag USING btree (str_tag_type);
CREATE INDEX i_host_tag_pk_host ON public.host_tag USING btree (pk_host);
CREATE INDEX i_booking_3 ON public.job USING btree (str_state, b_paused, pk_show, pk_facility);
CREATE INDEX i_job_active_pkjob ON public.job USING btree (pk_job) WHERE ((str_state)::text <> 'FINISHED'::text);
CREATE INDEX i_job_int_min_cores ON public.job USING btree (int_min_cores);
CREATE INDEX i_job_pk_dept ON public.job USING btree (pk_dept);
CREATE INDEX i_job_pk_facility ON public.job USING btree (pk_facility);
CREATE INDEX i_job_pkgroup ON public.job USING btree (pk_folder);
CREATE INDEX i_job_pkshow ON public.job USING btree (pk_show);
CREATE INDEX i_job_str_name ON public.job USING btree (str_name);
CREATE INDEX i_job_str_os ON public.job USING btree (str_os);
CREATE INDEX i_job_str_shot ON public.job USING btree (str_shot);
CREATE INDEX i_job_str_state ON public.job USING btree (str_state);
CREATE INDEX i_job_ts_updated ON public.job USING btree (ts_updated);
CREATE INDEX idx_job_pending_lookup ON public.job USING btree (pk_show, pk_facility, str_state, b_paused) WHERE (((str_state)::text = 'PENDING'::text) AND (b_paused = false));
CREATE INDEX i_job_resource_cores ON public.job_resource USING btree (int_cores);
CREATE INDEX i_job_resource_gpus ON public.job_resource USING btree (int_gpus);
CREATE INDEX i_job_resource_gpus_min_max ON public.job_resource USING btree (int_min_gpus, int_max_gpus);
CREATE INDEX i_job_resource_int_priority ON public.job_resource USING btree (int_priority);
CREATE INDEX i_job_resource_max_c ON public.job_resource USING btree (int_max_cores);
CREATE INDEX i_job_resource_max_gpus ON public.job_resource USING btree (int_max_gpus);
CREATE INDEX i_job_resource_min_max ON public.job_resource USING btree (int_min_cores, int_max_cores);
CREATE INDEX i_job_tier ON public.job_resource USING btree (float_tier);
CREATE INDEX i_layer_b_threadable ON public.layer USING btree (b_threadable);
CREATE INDEX i_layer_cores_gpus_mem ON public.layer USING btree (int_cores_min, int_gpus_min, int_mem_min, int_gpu_mem_min);
CREATE INDEX i_layer_cores_gpus_mem_thread ON public.layer USING btree (int_cores_min, int_gpus_min, int_mem_min, int_gpu_mem_min, b_threadable);
CREATE INDEX i_layer_cores_mem ON public.layer USING btree (int_cores_min, int_mem_min);
CREATE INDEX i_layer_cores_mem_thread ON public.layer USING btree (int_cores_min, int_mem_min, b_threadable);
CREATE INDEX i_layer_int_cores_max ON public.layer USING btree (int_cores_max);
CREATE INDEX i_layer_int_dispatch_order ON public.layer USING btree (int_dispatch_order);
CREATE INDEX i_layer_int_gpu_mem_min ON public.layer USING btree (int_gpu_mem_min);
CREATE INDEX i_layer_int_gpus_mem_min_1 ON public.layer USING btree (int_gpu_mem_min);
CREATE INDEX i_layer_int_gpus_min ON public.layer USING btree (int_gpus_min);
CREATE INDEX i_layer_mem_min ON public.layer USING btree (int_mem_min);
CREATE INDEX i_layer_pkjob ON public.layer USING btree (pk_job);
CREATE INDEX i_layer_start_after ON public.layer USING btree (ts_start_after) WHERE (ts_start_after IS NOT NULL);
CREATE INDEX i_layer_str_tags ON public.layer USING btree (str_tags);
CREATE INDEX i_layer_strname ON public.layer USING btree (str_name);
CREATE INDEX idx_layer_tags_array ON public.layer USING gin (string_to_array(replace((str_tags)::text, ' '::text, ''::text), '|'::text));
CREATE INDEX i_layerstat_int_waiting_count ON public.layer_stat USING btree ((
CASE
    WHEN (int_waiting_count > 0) THEN 1
    ELSE NULL::integer
END), (
CASE
    WHEN (int_waiting_count > 0) THEN pk_layer
    ELSE NULL::character varying
END));
CREATE INDEX i_layerstat_pkjob ON public.layer_stat USING btree (pk_job);
CREATE INDEX idx_layer_stat_waiting ON public.layer_stat USING btree (pk_layer) WHERE (int_waiting_count > 0);
CREATE UNIQUE INDEX i_layer_stat_pk_layer ON public.layer_stat USING btree (pk_layer);
CREATE INDEX i_proc_int_gpu_mem_reserved ON public.proc USING btree (int_gpu_mem_reserved);
CREATE INDEX i_proc_pkhost ON public.proc USING btree (pk_host);
CREATE INDEX i_proc_pkjob ON public.proc USING btree (pk_job);
CREATE INDEX i_proc_pklayer ON public.proc USING btree (pk_layer);
CREATE INDEX i_proc_pkshow ON public.proc USING btree (pk_show);
CREATE INDEX i_sub_tier ON public.subscription USING btree (float_tier);
CREATE INDEX i_subscription_pkalloc ON public.subscription USING btree (pk_alloc);
