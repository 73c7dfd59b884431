package cuebotsim

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Book books one WAITING frame on a host the way Cuebot books a frame of a
// show it manages: one transaction with the whole write set (frame RUNNING
// on the host, a new proc, the host's idle resources lowered, the five
// counters raised), taking locks in the order DESIGN.md gives. It returns the
// new proc's key. Version and state guards make it fail with ErrStale when
// the frame was booked or changed meanwhile; Cuebot's guard triggers make it
// fail when the host or a cap has no room.
func (s *Sim) Book(ctx context.Context, frameID, hostID string, cores, mem, gpus, gpuMem int64) (string, error) {
	var procID string
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var hostName, alloc string
		if err := tx.QueryRow(ctx, `SELECT str_name, pk_alloc FROM host WHERE pk_host = $1 FOR UPDATE`, hostID).
			Scan(&hostName, &alloc); err != nil {
			return fmt.Errorf("lock host %s: %w", hostID, err)
		}
		var layer, job, show, folder, dept string
		var version int32
		err := tx.QueryRow(ctx, `SELECT f.pk_layer, f.pk_job, j.pk_show, j.pk_folder, j.pk_dept, f.int_version
			FROM frame f JOIN job j USING (pk_job) WHERE f.pk_frame = $1 AND f.str_state = 'WAITING'`, frameID).
			Scan(&layer, &job, &show, &folder, &dept, &version)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrStale
		}
		if err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		for _, lock := range []struct{ sql, key string }{
			{`SELECT 1 FROM layer_stat WHERE pk_layer = $1 FOR UPDATE`, layer},
			{`SELECT 1 FROM job_stat WHERE pk_job = $1 FOR UPDATE`, job},
		} {
			if _, err := tx.Exec(ctx, lock.sql, lock.key); err != nil {
				return fmt.Errorf("lock stats: %w", err)
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE frame SET str_state = 'RUNNING', str_host = $2, int_cores = $3,
				int_mem_reserved = $4, int_gpus = $5, int_gpu_mem_reserved = $6, ts_started = current_timestamp,
				ts_updated = current_timestamp, ts_stopped = NULL, int_version = int_version + 1,
				int_retries = CASE WHEN int_exit_status IN (-1, 256, 286, 299, 301, 302, 399) THEN int_retries
				                   ELSE int_retries + 1 END
			WHERE pk_frame = $1 AND str_state = 'WAITING' AND int_version = $7`,
			frameID, hostName, cores, mem, gpus, gpuMem, version)
		if err != nil {
			return fmt.Errorf("start frame: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return ErrStale
		}
		if err := tx.QueryRow(ctx, `INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame,
				int_cores_reserved, int_mem_reserved, int_mem_pre_reserved, int_gpus_reserved, int_gpu_mem_reserved,
				int_gpu_mem_pre_reserved, int_mem_used, b_local)
			VALUES (uuid_generate_v4()::text, $1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $9, 262144, false)
			RETURNING pk_proc`, hostID, show, layer, job, frameID, cores, mem, gpus, gpuMem).Scan(&procID); err != nil {
			return fmt.Errorf("insert proc: %w", err)
		}
		for _, stmt := range []struct {
			sql  string
			args []any
		}{
			{`UPDATE host SET int_cores_idle = int_cores_idle - $2, int_mem_idle = int_mem_idle - $3,
				int_gpus_idle = int_gpus_idle - $4, int_gpu_mem_idle = int_gpu_mem_idle - $5 WHERE pk_host = $1`,
				[]any{hostID, cores, mem, gpus, gpuMem}},
			{`UPDATE subscription SET int_cores = int_cores + $3, int_gpus = int_gpus + $4 WHERE pk_show = $1 AND pk_alloc = $2`,
				[]any{show, alloc, cores, gpus}},
			{`UPDATE layer_resource SET int_cores = int_cores + $2, int_gpus = int_gpus + $3 WHERE pk_layer = $1`,
				[]any{layer, cores, gpus}},
			{`UPDATE job_resource SET int_cores = int_cores + $2, int_gpus = int_gpus + $3 WHERE pk_job = $1`,
				[]any{job, cores, gpus}},
			{`UPDATE folder_resource SET int_cores = int_cores + $2, int_gpus = int_gpus + $3 WHERE pk_folder = $1`,
				[]any{folder, cores, gpus}},
			{`UPDATE point SET int_cores = int_cores + $3, int_gpus = int_gpus + $4 WHERE pk_show = $1 AND pk_dept = $2`,
				[]any{show, dept, cores, gpus}},
		} {
			if _, err := tx.Exec(ctx, stmt.sql, stmt.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("cuebotsim: book frame %s on host %s: %w", frameID, hostID, err)
	}
	return procID, nil
}
