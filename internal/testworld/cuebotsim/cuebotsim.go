// Package cuebotsim does to a database what Cuebot does beside cuesched:
// frames completing and retrying (released in Cuebot's two transactions),
// host reports, and Cuebot's own bookings of the shows it still manages.
// Tests, the demo and the benchmarks use it to stand in for Cuebot; it writes
// what Cuebot writes and nothing more.
package cuebotsim

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Counters says who lowers the five counters (subscription, layer_resource,
// job_resource, folder_resource, point) when a proc of a managed show is
// released.
type Counters int

const (
	// SchedulerCounters is Cuebot from mid-2026: it leaves the counters of
	// managed shows to the scheduler and sends pg_notify('acct_release').
	SchedulerCounters Counters = iota
	// CuebotCounters is an older Cuebot that lowers them itself.
	CuebotCounters
)

// Sim acts as Cuebot on one database.
type Sim struct {
	Pool     *pgxpool.Pool
	Counters Counters
}

// ErrStale means the frame or proc was not in the state the call expected
// (another writer got there first), as Cuebot's version guards report it.
var ErrStale = errors.New("stale: frame or proc changed underneath")

// Proc is the part of a proc row a release needs.
type Proc struct {
	ID, Host, Show, Layer, Job, Frame string
	Cores, Mem, GPUs, GPUMem          int64
}

// ProcOfFrame reads the proc holding a frame.
func (s *Sim) ProcOfFrame(ctx context.Context, frameID string) (Proc, error) {
	var p Proc
	err := s.Pool.QueryRow(ctx, `SELECT pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved,
			int_mem_reserved, int_gpus_reserved, int_gpu_mem_reserved FROM proc WHERE pk_frame = $1`, frameID).
		Scan(&p.ID, &p.Host, &p.Show, &p.Layer, &p.Job, &p.Frame, &p.Cores, &p.Mem, &p.GPUs, &p.GPUMem)
	if err != nil {
		return p, fmt.Errorf("cuebotsim: proc of frame %s: %w", frameID, err)
	}
	return p, nil
}

// StopFrame is the first of Cuebot's two release transactions: the RUNNING
// frame stops in state (SUCCEEDED, DEAD, WAITING for a retry, ...) with the
// exit status, version-guarded, and its proc lets go of it (pk_frame NULL)
// while still holding the host's capacity.
func (s *Sim) StopFrame(ctx context.Context, frameID, state string, exitStatus int) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var layer, job string
		var version int32
		err := tx.QueryRow(ctx, `SELECT pk_layer, pk_job, int_version FROM frame WHERE pk_frame = $1 AND str_state = 'RUNNING'`,
			frameID).Scan(&layer, &job, &version)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, ErrStale)
		}
		if err != nil {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, err)
		}
		// The frame triggers update layer_stat then job_stat; lock them in
		// that order first, as every writer of this schema does.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM layer_stat WHERE pk_layer = $1 FOR UPDATE`, layer); err != nil {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM job_stat WHERE pk_job = $1 FOR UPDATE`, job); err != nil {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, err)
		}
		tag, err := tx.Exec(ctx, `UPDATE frame SET str_state = $2, int_exit_status = $3,
				ts_stopped = current_timestamp + interval '1 second', ts_updated = current_timestamp,
				int_version = int_version + 1
			WHERE pk_frame = $1 AND str_state = 'RUNNING' AND int_version = $4`, frameID, state, exitStatus, version)
		if err != nil {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("cuebotsim: stop frame %s: %w", frameID, ErrStale)
		}
		if _, err := tx.Exec(ctx, `UPDATE proc SET pk_frame = NULL WHERE pk_frame = $1`, frameID); err != nil {
			return fmt.Errorf("cuebotsim: unlink proc of frame %s: %w", frameID, err)
		}
		return nil
	})
}

// DeleteProc is the second release transaction: the proc is deleted and its
// host gets its idle resources back. For a managed show the counters are left
// to the scheduler and acct_release is notified; otherwise (or with
// CuebotCounters) Cuebot lowers them itself, locking in its order: host,
// subscription, layer_resource, job_resource, folder_resource, point.
func (s *Sim) DeleteProc(ctx context.Context, procID string) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var p Proc
		var managed bool
		var alloc, folder, dept string
		err := tx.QueryRow(ctx, `SELECT p.pk_proc, p.pk_host, p.pk_show, p.pk_layer, p.pk_job, p.int_cores_reserved,
				p.int_mem_reserved, p.int_gpus_reserved, p.int_gpu_mem_reserved, sh.b_scheduler_managed, h.pk_alloc,
				j.pk_folder, j.pk_dept
			FROM proc p JOIN show sh ON sh.pk_show = p.pk_show JOIN host h ON h.pk_host = p.pk_host
			JOIN job j ON j.pk_job = p.pk_job
			WHERE p.pk_proc = $1`, procID).Scan(&p.ID, &p.Host, &p.Show, &p.Layer, &p.Job, &p.Cores, &p.Mem, &p.GPUs,
			&p.GPUMem, &managed, &alloc, &folder, &dept)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cuebotsim: delete proc %s: %w", procID, ErrStale)
		}
		if err != nil {
			return fmt.Errorf("cuebotsim: delete proc %s: %w", procID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE host SET int_cores_idle = int_cores_idle + $2, int_mem_idle = int_mem_idle + $3,
				int_gpus_idle = int_gpus_idle + $4, int_gpu_mem_idle = int_gpu_mem_idle + $5 WHERE pk_host = $1`,
			p.Host, p.Cores, p.Mem, p.GPUs, p.GPUMem); err != nil {
			return fmt.Errorf("cuebotsim: give back host %s: %w", p.Host, err)
		}
		if !managed || s.Counters == CuebotCounters {
			for _, stmt := range []struct {
				sql string
				arg []any
			}{
				{`UPDATE subscription SET int_cores = int_cores - $3, int_gpus = int_gpus - $4 WHERE pk_show = $1 AND pk_alloc = $2`,
					[]any{p.Show, alloc, p.Cores, p.GPUs}},
				{`UPDATE layer_resource SET int_cores = int_cores - $2, int_gpus = int_gpus - $3 WHERE pk_layer = $1`,
					[]any{p.Layer, p.Cores, p.GPUs}},
				{`UPDATE job_resource SET int_cores = int_cores - $2, int_gpus = int_gpus - $3 WHERE pk_job = $1`,
					[]any{p.Job, p.Cores, p.GPUs}},
				{`UPDATE folder_resource SET int_cores = int_cores - $2, int_gpus = int_gpus - $3 WHERE pk_folder = $1`,
					[]any{folder, p.Cores, p.GPUs}},
				{`UPDATE point SET int_cores = int_cores - $3, int_gpus = int_gpus - $4 WHERE pk_show = $1 AND pk_dept = $2`,
					[]any{p.Show, dept, p.Cores, p.GPUs}},
			} {
				if _, err := tx.Exec(ctx, stmt.sql, stmt.arg...); err != nil {
					return fmt.Errorf("cuebotsim: lower counters of proc %s: %w", procID, err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM proc WHERE pk_proc = $1`, procID); err != nil {
			return fmt.Errorf("cuebotsim: delete proc %s: %w", procID, err)
		}
		if managed && s.Counters == SchedulerCounters {
			if _, err := tx.Exec(ctx, `SELECT pg_notify('acct_release', json_build_object('pk_proc', $1::text,
					'pk_host', $2::text, 'pk_show', $3::text, 'pk_layer', $4::text, 'pk_job', $5::text,
					'int_cores', $6::bigint, 'int_gpus', $7::bigint)::text)`,
				p.ID, p.Host, p.Show, p.Layer, p.Job, p.Cores, p.GPUs); err != nil {
				return fmt.Errorf("cuebotsim: notify release of proc %s: %w", procID, err)
			}
		}
		return nil
	})
}

// Complete finishes a RUNNING frame the way Cuebot does on RQD's completion
// report: StopFrame, then DeleteProc, in two transactions.
func (s *Sim) Complete(ctx context.Context, frameID, state string, exitStatus int) error {
	p, err := s.ProcOfFrame(ctx, frameID)
	if err != nil {
		return err
	}
	if err := s.StopFrame(ctx, frameID, state, exitStatus); err != nil {
		return err
	}
	return s.DeleteProc(ctx, p.ID)
}

// Succeed completes a frame successfully.
func (s *Sim) Succeed(ctx context.Context, frameID string) error {
	return s.Complete(ctx, frameID, "SUCCEEDED", 0)
}

// Retry fails a frame with a retryable exit status: it goes back to WAITING
// (Cuebot's retry) and its proc is released.
func (s *Sim) Retry(ctx context.Context, frameID string) error {
	return s.Complete(ctx, frameID, "WAITING", 1)
}

// HostReport writes what a host report writes: the ping time and free memory
// of the host, and the memory use of each running frame and its proc.
func (s *Sim) HostReport(ctx context.Context, hostID string, memFree int64) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE host_stat SET ts_ping = current_timestamp, int_mem_free = $2 WHERE pk_host = $1`,
			hostID, memFree); err != nil {
			return fmt.Errorf("cuebotsim: report host %s: %w", hostID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE proc SET int_mem_used = int_mem_reserved / 2,
				int_mem_max_used = greatest(int_mem_max_used, int_mem_reserved / 2), ts_ping = current_timestamp
			WHERE pk_host = $1`, hostID); err != nil {
			return fmt.Errorf("cuebotsim: report procs of host %s: %w", hostID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE frame f SET int_mem_used = p.int_mem_used,
				int_mem_max_used = greatest(f.int_mem_max_used, p.int_mem_used), ts_updated = current_timestamp,
				ts_llu = current_timestamp
			FROM proc p WHERE p.pk_host = $1 AND p.pk_frame = f.pk_frame`, hostID); err != nil {
			return fmt.Errorf("cuebotsim: report frames of host %s: %w", hostID, err)
		}
		return nil
	})
}

// KillExitStatus is the exit status Cuebot gives a frame it stops by hand
// (a kill of its job, a retry, ...): 500 plus the ordinal of the state it
// stops in, WAITING being 0. It is no "lost" status (399): the frame's retry
// count is not spared, and Cuebot never books it again once its job is done.
const KillExitStatus = 500

// ShutdownJob is the first transaction of Cuebot's kill of a job, written in
// the caller's tx so that it may read beside it (a snapshot, say): the job
// FINISHED, its visible name cleared and its stop time stamped, only if it
// is still PENDING. It reports whether this call finished the job. Cuebot
// then stops each RUNNING frame of the job with StopFrame(frame, "WAITING",
// KillExitStatus), asks RQD to kill it, and deletes its proc (DeleteProc) on
// the completion report of the killed frame.
func ShutdownJob(ctx context.Context, tx pgx.Tx, jobID string) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE job SET str_state = 'FINISHED', str_visible_name = NULL,
			ts_stopped = current_timestamp
		WHERE pk_job = $1 AND str_state = 'PENDING'`, jobID)
	if err != nil {
		return false, fmt.Errorf("cuebotsim: shut down job %s: %w", jobID, err)
	}
	return tag.RowsAffected() == 1, nil
}
