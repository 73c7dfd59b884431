DROP TABLE cuesched.cluster_wait;
ALTER TABLE cuesched.instance
    DROP COLUMN reported_at,
    DROP COLUMN lag_bytes,
    DROP COLUMN applied_lsn;
