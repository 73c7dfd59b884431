-- The rows a freshly installed Cuebot database holds: the default show
-- "testing" (not scheduler-managed), its root folder and point, the stock
-- departments, facilities local and cloud, their allocations (local.general
-- and cloud.general share the tag "general"), the show's subscriptions, the
-- stock services and the retry config.

INSERT INTO show (pk_show, str_name, int_default_max_cores, int_default_min_cores,
                  b_booking_enabled, b_dispatch_enabled, b_active)
VALUES ('00000000-0000-0000-0000-000000000000', 'testing', 200000, 100, true, true, true);

INSERT INTO show_stats (pk_show) VALUES ('00000000-0000-0000-0000-000000000000');

INSERT INTO dept (pk_dept, str_name, b_default) VALUES
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0', 'Lighting', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', 'Animation', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA2', 'Hair', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA3', 'Cloth', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA4', 'Layout', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA5', 'FX', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA6', 'Pipeline', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA7', 'Unknown', true);

INSERT INTO facility (pk_facility, str_name, b_default) VALUES
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', 'local', false),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0', 'cloud', true);

INSERT INTO folder (pk_folder, pk_parent_folder, pk_show, str_name, b_default, pk_dept,
                    int_job_min_cores, int_job_max_cores, int_job_priority, f_order, b_exclude_managed)
VALUES ('A0000000-0000-0000-0000-000000000000', NULL, '00000000-0000-0000-0000-000000000000', 'testing', true,
        'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA6', -1, -1, -1, 1, false);

INSERT INTO point (pk_point, pk_dept, pk_show, int_cores, b_managed, int_min_cores, float_tier)
VALUES ('FFEEDDCC-AAAA-AAAA-AAAA-AAAAAAAAAAA0', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA6',
        '00000000-0000-0000-0000-000000000000', 0, false, 0, 0);

INSERT INTO alloc (pk_alloc, str_name, b_allow_edit, b_default, str_tag, pk_facility, b_billable, b_enabled) VALUES
    ('00000000-0000-0000-0000-000000000000', 'local.general', false, true, 'general', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', false, true),
    ('00000000-0000-0000-0000-000000000001', 'local.desktop', false, false, 'desktop', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', false, true),
    ('00000000-0000-0000-0000-000000000002', 'local.unassigned', false, false, 'unassigned', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', false, true),
    ('00000000-0000-0000-0000-000000000003', 'cloud.general', true, false, 'general', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0', false, true),
    ('00000000-0000-0000-0000-000000000004', 'cloud.unassigned', true, false, 'unassigned', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0', false, true);

INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst, int_cores, float_tier) VALUES
    ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', 100000, 100000, 0, 0),
    ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000000', 100000, 100000, 0, 0),
    ('00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000000', 100000, 100000, 0, 0);

INSERT INTO service (pk_service, str_name, b_threadable, int_cores_min, int_mem_min, str_tags) VALUES
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0', 'default', false, 100, 3355443, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1', 'prman', false, 100, 3355443, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA2', 'arnold', true, 100, 3355443, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA3', 'shell', false, 100, 3355443, 'general | util'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA4', 'maya', false, 100, 2097152, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA5', 'houdini', false, 100, 3355443, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA7', 'katana', true, 100, 2097152, 'general | desktop | util'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA9', 'nuke', false, 100, 2097152, 'general | desktop'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAA11', 'preprocess', false, 10, 393216, 'util'),
    ('AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAA12', 'postprocess', false, 10, 524288, 'util');

INSERT INTO config (pk_config, str_key, int_value, long_value, str_value, b_value)
VALUES ('00000000-0000-0000-0000-000000000005', 'MAX_FRAME_RETRIES', 16, 0, NULL, false);
