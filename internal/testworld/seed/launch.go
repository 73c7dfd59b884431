package seed

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Launch inserts a job and launches it with Cuebot's own sequence, in one
// transaction: frames inserted in SETUP, then one statement moves them all to
// WAITING (the wait-to-depend trigger diverts frames with depends to DEPEND),
// then the layer_stat and job_stat counts, the job's frame and layer counts
// and show_stats are set directly, and the job becomes PENDING.
func (s *Seeded) Launch(ctx context.Context, j Job) (JobKeys, error) {
	keys := JobKeys{ID: s.NewID(), Layers: map[string]string{}, Frames: map[string]string{}}
	show, ok := s.Shows[j.Show]
	if !ok {
		return keys, fmt.Errorf("seed: job %s: unknown show %q", j.Name, j.Show)
	}
	folder, ok := s.Folders[j.Show+"/"+j.Folder]
	if !ok {
		return keys, fmt.Errorf("seed: job %s: unknown folder %q of show %s", j.Name, j.Folder, j.Show)
	}
	facility, ok := s.facilities[orDefault(j.Facility, "local")]
	if !ok {
		return keys, fmt.Errorf("seed: job %s: unknown facility %q", j.Name, j.Facility)
	}
	dept, ok := s.depts[orDefault(j.Dept, "Unknown")]
	if !ok {
		return keys, fmt.Errorf("seed: job %s: unknown department %q", j.Name, j.Dept)
	}
	var uid any
	if j.UID > 0 {
		uid = j.UID
	}
	var os any
	if j.OS != "" {
		os = j.OS
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO job (pk_job, pk_folder, pk_show, str_name, str_visible_name, str_shot,
				str_user, str_state, str_log_dir, int_uid, b_paused, pk_facility, pk_dept, str_show, str_os)
			VALUES ($1, $2, $3, $4, $4, $5, $6, 'STARTUP', $7, $8, $9, $10, $11, $12, $13)`,
			keys.ID, folder, show, j.Name, orDefault(j.Shot, "shot01"), orDefault(j.User, "render"),
			orDefault(j.LogDir, "/tmp/cuesched/logs/"+j.Name), uid, j.Paused, facility, dept, j.Show, os); err != nil {
			return fmt.Errorf("insert job: %w", err)
		}
		for k, v := range j.Env {
			if _, err := tx.Exec(ctx, `INSERT INTO job_env (pk_job_env, pk_job, str_key, str_value) VALUES ($1, $2, $3, $4)`,
				s.NewID(), keys.ID, k, v); err != nil {
				return fmt.Errorf("insert job env: %w", err)
			}
		}
		var frames [][]any
		for li, l := range j.Layers {
			lid := s.NewID()
			keys.Layers[l.Name] = lid
			if err := s.insertLayer(ctx, tx, keys.ID, lid, li, l, j); err != nil {
				return fmt.Errorf("layer %s: %w", l.Name, err)
			}
			numbers := l.frameNumbers()
			chunk := max(l.ChunkSize, 1)
			for i := 0; i < len(numbers); i += int(chunk) {
				name := fmt.Sprintf("%04d-%s", numbers[i], l.Name)
				fid := s.NewID()
				keys.Frames[name] = fid
				depends := 0
				if l.Depend {
					depends = 1
				}
				frames = append(frames, []any{fid, lid, keys.ID, name, "SETUP", numbers[i], i / int(chunk), li, depends})
			}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"frame"},
			[]string{"pk_frame", "pk_layer", "pk_job", "str_name", "str_state", "int_number", "int_dispatch_order",
				"int_layer_order", "int_depend_count"}, pgx.CopyFromRows(frames)); err != nil {
			return fmt.Errorf("copy %d frames: %w", len(frames), err)
		}
		for _, stmt := range []string{
			`UPDATE frame SET str_state = 'WAITING' WHERE pk_job = $1 AND str_state = 'SETUP'`,
			`UPDATE layer_stat ls SET int_total_count = c.total, int_waiting_count = c.waiting, int_depend_count = c.depend
			   FROM (SELECT pk_layer, count(*) AS total,
			                count(*) FILTER (WHERE str_state = 'WAITING') AS waiting,
			                count(*) FILTER (WHERE str_state = 'DEPEND') AS depend
			           FROM frame WHERE pk_job = $1 GROUP BY pk_layer) c
			  WHERE ls.pk_layer = c.pk_layer`,
			`UPDATE job_stat js SET int_waiting_count = c.waiting, int_depend_count = c.depend
			   FROM (SELECT count(*) FILTER (WHERE str_state = 'WAITING') AS waiting,
			                count(*) FILTER (WHERE str_state = 'DEPEND') AS depend
			           FROM frame WHERE pk_job = $1) c
			  WHERE js.pk_job = $1`,
		} {
			if _, err := tx.Exec(ctx, stmt, keys.ID); err != nil {
				return fmt.Errorf("launch: %w", err)
			}
		}
		maxCores := orDefault(j.MaxCores, 10000)
		maxGPUs := orDefault(j.MaxGPUs, 100)
		if _, err := tx.Exec(ctx, `UPDATE job_resource SET int_priority = $2, int_max_cores = $3, int_max_gpus = $4
			WHERE pk_job = $1`, keys.ID, orDefault(j.Priority, 1), maxCores, maxGPUs); err != nil {
			return fmt.Errorf("job resource: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE job SET int_frame_count = $2, int_layer_count = $3, str_state = 'PENDING'
			WHERE pk_job = $1`, keys.ID, len(frames), len(j.Layers)); err != nil {
			return fmt.Errorf("activate job: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE show_stats SET int_frame_insert_count = int_frame_insert_count + $2,
			int_job_insert_count = int_job_insert_count + 1 WHERE pk_show = $1`, show, len(frames)); err != nil {
			return fmt.Errorf("show stats: %w", err)
		}
		return nil
	})
	if err != nil {
		return keys, fmt.Errorf("seed: launch job %s: %w", j.Name, err)
	}
	s.mu.Lock()
	s.Jobs[j.Name] = keys
	s.mu.Unlock()
	return keys, nil
}

func (s *Seeded) insertLayer(ctx context.Context, tx pgx.Tx, job, id string, order int, l Layer, j Job) error {
	rng := l.Range
	if rng == "" {
		rng = fmt.Sprintf("1-%d", l.Frames)
	}
	var startAfter any
	if !l.StartAfter.IsZero() {
		startAfter = l.StartAfter
	}
	if _, err := tx.Exec(ctx, `INSERT INTO layer (pk_layer, pk_job, str_name, str_cmd, str_range, int_chunk_size,
			int_dispatch_order, int_cores_min, int_cores_max, int_mem_min, int_gpus_min, int_gpu_mem_min, str_tags,
			str_type, b_threadable, str_services, ts_start_after)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'Render', $14, $15, $16)`,
		id, job, l.Name, orDefault(l.Cmd, "echo #IFRAME#"), rng, max(l.ChunkSize, 1), order, l.Cores, l.CoresMax,
		orDefault(l.Mem, int64(GB)), l.GPUs, l.GPUMem, orDefault(l.Tags, "general"), l.Threadable, orDefault(l.Services, "default"),
		startAfter); err != nil {
		return err
	}
	for _, name := range l.Limits {
		lim, ok := s.Limits[name]
		if !ok {
			return fmt.Errorf("unknown limit %q", name)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record) VALUES ($1, $2, $3)`,
			s.NewID(), id, lim); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseDepends resolves the depends of every DEPEND frame of a layer, as
// Cuebot does when what they wait on finishes: the depend count reaches 0 and
// the trigger moves each frame to WAITING.
func (s *Seeded) ReleaseDepends(ctx context.Context, layerID string) error {
	if _, err := s.Pool.Exec(ctx, `UPDATE frame SET int_depend_count = 0 WHERE pk_layer = $1 AND str_state = 'DEPEND'`,
		layerID); err != nil {
		return fmt.Errorf("seed: release depends of layer %s: %w", layerID, err)
	}
	return nil
}
