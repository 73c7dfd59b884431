package launch

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/match"
)

// sqlLaunchSpecs reads what RunFrame needs for a set of bookings, one row
// per booking whose proc still holds its frame; a booking without a row is
// gone (its proc was released, or lost its frame to Cuebot).
const sqlLaunchSpecs = `
	SELECT o.proc_id, p.int_cores_reserved, p.int_mem_reserved, p.int_gpus_reserved, p.int_gpu_mem_reserved,
	       j.pk_job, j.str_name, j.str_user, coalesce(j.str_log_dir, ''), coalesce(j.str_show, ''),
	       coalesce(j.str_shot, ''), j.int_uid, coalesce(j.str_loki_url, ''),
	       l.pk_layer, l.str_name, coalesce(l.str_cmd, ''), coalesce(l.str_range, ''), l.int_chunk_size,
	       l.b_threadable, l.int_mem_min,
	       f.str_name, f.int_number, coalesce(hs.str_os, ''),
	       coalesce((SELECT json_object_agg(e.str_key, coalesce(e.str_value, '')) FROM job_env e
	                  WHERE e.pk_job = j.pk_job AND e.str_key IS NOT NULL), '{}'),
	       coalesce((SELECT json_object_agg(e.str_key, coalesce(e.str_value, '')) FROM layer_env e
	                  WHERE e.pk_layer = l.pk_layer AND e.str_key IS NOT NULL), '{}')
	  FROM cuesched.launch_outbox o
	  JOIN proc p ON p.pk_proc = o.proc_id AND p.pk_frame = o.frame_id
	  JOIN frame f ON f.pk_frame = o.frame_id
	  JOIN layer l ON l.pk_layer = f.pk_layer
	  JOIN job j ON j.pk_job = f.pk_job
	  LEFT JOIN host_stat hs ON hs.pk_host = o.host_id
	 WHERE o.proc_id = ANY($1)`

// loadSpecs fills the launch fields of items in one query and returns the
// proc ids of those that are gone.
func loadSpecs(ctx context.Context, pool *pgxpool.Pool, items []*item) (map[string]bool, error) {
	byProc := make(map[string]*item, len(items))
	ids := make([]string, len(items))
	for i, it := range items {
		byProc[it.proc], ids[i] = it, it.proc
	}
	rows, err := pool.Query(ctx, sqlLaunchSpecs, ids)
	if err != nil {
		return nil, fmt.Errorf("read launch fields: %w", err)
	}
	defer rows.Close()
	found := make(map[string]bool, len(items))
	for rows.Next() {
		var proc string
		var s launchSpec
		var uid *int64
		var chunk, number int64
		if err := rows.Scan(&proc, &s.Reserved.Cores, &s.Reserved.Mem, &s.Reserved.GPUs, &s.Reserved.GPUMem,
			&s.Job.ID, &s.Job.Name, &s.Job.User, &s.Job.LogDir, &s.Job.Show, &s.Job.Shot, &uid, &s.Job.LokiURL,
			&s.Layer.ID, &s.Layer.Name, &s.Layer.Command, &s.Layer.Range, &chunk, &s.Layer.Threadable, &s.Layer.MemMin,
			&s.Frame.Name, &number, &s.Host.OS, &s.Job.Env, &s.Layer.Env); err != nil {
			return nil, fmt.Errorf("read launch fields: %w", err)
		}
		it := byProc[proc]
		if it == nil {
			continue
		}
		found[proc] = true
		if uid != nil && *uid > 0 && *uid <= math.MaxInt32 {
			u := int32(*uid)
			s.Job.UID = &u
		}
		s.Layer.ChunkSize = int(min(max(chunk, 1), math.MaxInt32))
		s.Frame.Number = int(number)
		s.ProcID, s.Frame.ID, s.Host.Name = it.proc, it.frame, it.hostName
		it.spec = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read launch fields: %w", err)
	}
	gone := map[string]bool{}
	for _, it := range items {
		if !found[it.proc] {
			gone[it.proc] = true
		}
	}
	return gone, nil
}

// release undoes one booking whose launch failed for certain, in one
// transaction in the lock order (host, layer_stat, job_stat, frame, proc,
// then the counters through counters.Recompute), and only if that proc still
// holds that frame, RUNNING at the version the booking left: the frame goes
// back to WAITING with exit status 299 (Cuebot's "booking cleared"; its
// history trigger deletes the open history row), the proc is deleted (its
// outbox row with it, by trigger), the host gets its idle resources back and
// the counters are brought back to the sum of their procs. Otherwise the
// booking is no longer ours to undo and the result is SettledGone.
func (l *Launcher) release(ctx context.Context, it *item) (Settled, error) {
	s := Settled{Result: SettledGone, ProcID: it.proc, FrameID: it.frame, HostID: it.hostID, HostName: it.hostName,
		ClusterID: it.cluster}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var k counters.Proc
		var host string
		err := tx.QueryRow(ctx, `
			SELECT p.pk_host, p.pk_layer, p.pk_job, p.pk_show, j.pk_folder, j.pk_dept, h.pk_alloc
			  FROM proc p JOIN job j ON j.pk_job = p.pk_job JOIN host h ON h.pk_host = p.pk_host
			 WHERE p.pk_proc = $1 AND p.pk_frame = $2`, it.proc, it.frame).
			Scan(&host, &k.Layer, &k.Job, &k.Show, &k.Folder, &k.Dept, &k.Alloc)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read proc: %w", err)
		}

		var frameState string
		var frameVersion *int32
		var procFound bool
		var procHost, procFrame string
		var held match.Resources
		b := &pgx.Batch{}
		b.Queue(`SELECT 1 FROM host WHERE pk_host = $1 FOR UPDATE`, host)
		b.Queue(`SELECT 1 FROM layer_stat WHERE pk_layer = $1 FOR UPDATE`, k.Layer)
		b.Queue(`SELECT 1 FROM job_stat WHERE pk_job = $1 FOR UPDATE`, k.Job)
		b.Queue(`SELECT str_state, int_version FROM frame WHERE pk_frame = $1 FOR UPDATE`, it.frame).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					if err := rows.Scan(&frameState, &frameVersion); err != nil {
						return err
					}
				}
				return rows.Err()
			})
		b.Queue(`SELECT pk_host, coalesce(pk_frame, ''), int_cores_reserved, int_mem_reserved, int_gpus_reserved,
				int_gpu_mem_reserved FROM proc WHERE pk_proc = $1 FOR UPDATE`, it.proc).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					procFound = true
					if err := rows.Scan(&procHost, &procFrame, &held.Cores, &held.Mem, &held.GPUs, &held.GPUMem); err != nil {
						return err
					}
				}
				return rows.Err()
			})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("lock booking: %w", err)
		}
		if !procFound || procFrame != it.frame || procHost != host || frameState != "RUNNING" ||
			frameVersion == nil || *frameVersion != it.version {
			return nil // changed while we were not holding the locks: no longer ours
		}

		one := func(what string) func(pgconn.CommandTag) error {
			return func(ct pgconn.CommandTag) error {
				if ct.RowsAffected() != 1 {
					return fmt.Errorf("%s: %d rows", what, ct.RowsAffected())
				}
				return nil
			}
		}
		w := &pgx.Batch{}
		w.Queue(`UPDATE frame SET str_state = 'WAITING', int_exit_status = 299, ts_stopped = current_timestamp,
				ts_updated = current_timestamp, int_version = int_version + 1
			WHERE pk_frame = $1 AND str_state = 'RUNNING' AND int_version = $2`, it.frame, it.version).
			Exec(one("clear frame"))
		w.Queue(`DELETE FROM proc WHERE pk_proc = $1`, it.proc).Exec(one("delete proc"))
		w.Queue(`UPDATE host SET int_cores_idle = int_cores_idle + $2, int_mem_idle = int_mem_idle + $3,
				int_gpus_idle = int_gpus_idle + $4, int_gpu_mem_idle = int_gpu_mem_idle + $5 WHERE pk_host = $1`,
			host, held.Cores, held.Mem, held.GPUs, held.GPUMem).Exec(one("give back host"))
		if err := tx.SendBatch(ctx, w).Close(); err != nil {
			return fmt.Errorf("undo booking: %w", err)
		}
		var rows counters.Rows
		rows.Add(k)
		if _, err := counters.Recompute(ctx, tx, rows); err != nil {
			return err
		}
		s.Result, s.LayerID, s.JobID = SettledReleased, k.Layer, k.Job
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("release booking of frame %s (proc %s): %w", it.frame, it.proc, err)
	}
	return s, nil
}
