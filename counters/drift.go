package counters

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// driftSQL finds, in one snapshot, the counter rows of managed shows that
// differ from the sum of their procs, each as the Proc keys that mark it
// alone. Layer and job rows are read for unfinished jobs only: a finished
// job books nothing more, and scanning the counters of every job a site
// keeps would cost every poll the whole table.
const driftSQL = `
WITH p AS (
	SELECT p.pk_show, p.pk_layer, p.pk_job, j.pk_folder, j.pk_dept, h.pk_alloc,
	       p.int_cores_reserved AS cores, p.int_gpus_reserved AS gpus
	  FROM proc p JOIN job j ON j.pk_job = p.pk_job JOIN host h ON h.pk_host = p.pk_host
)
SELECT s.pk_show, s.pk_alloc, '', '', '', ''
  FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show AND sh.b_scheduler_managed
  LEFT JOIN (SELECT pk_show, pk_alloc, sum(cores) AS cores, sum(gpus) AS gpus FROM p GROUP BY 1, 2) u
         ON u.pk_show = s.pk_show AND u.pk_alloc = s.pk_alloc
 WHERE (s.int_cores, s.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))
UNION ALL
SELECT '', '', r.pk_layer, '', '', ''
  FROM layer_resource r JOIN job j ON j.pk_job = r.pk_job AND j.str_state <> 'FINISHED'
  JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
  LEFT JOIN (SELECT pk_layer, sum(cores) AS cores, sum(gpus) AS gpus FROM p GROUP BY 1) u ON u.pk_layer = r.pk_layer
 WHERE (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))
UNION ALL
SELECT '', '', '', r.pk_job, '', ''
  FROM job_resource r JOIN job j ON j.pk_job = r.pk_job AND j.str_state <> 'FINISHED'
  JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
  LEFT JOIN (SELECT pk_job, sum(cores) AS cores, sum(gpus) AS gpus FROM p GROUP BY 1) u ON u.pk_job = r.pk_job
 WHERE (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))
UNION ALL
SELECT '', '', '', '', r.pk_folder, ''
  FROM folder_resource r JOIN folder f ON f.pk_folder = r.pk_folder
  JOIN show sh ON sh.pk_show = f.pk_show AND sh.b_scheduler_managed
  LEFT JOIN (SELECT pk_folder, sum(cores) AS cores, sum(gpus) AS gpus FROM p GROUP BY 1) u ON u.pk_folder = r.pk_folder
 WHERE (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))
UNION ALL
SELECT pt.pk_show, '', '', '', '', pt.pk_dept
  FROM point pt JOIN show sh ON sh.pk_show = pt.pk_show AND sh.b_scheduler_managed
  LEFT JOIN (SELECT pk_show, pk_dept, sum(cores) AS cores, sum(gpus) AS gpus FROM p GROUP BY 1, 2) u
         ON u.pk_show = pt.pk_show AND u.pk_dept = pt.pk_dept
 WHERE (pt.int_cores, pt.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`

// Drifted reads, in tx's snapshot and without locking, the counter rows of
// managed shows that differ from the sum of their procs: those releases left
// high. A poll finds them so, including the rows of procs booked and
// released between two polls, which no poll saw. Each row comes back as a
// Proc whose keys mark that row alone (Rows.Add); Recompute then brings it
// back under its locks.
func Drifted(ctx context.Context, tx pgx.Tx) ([]Proc, error) {
	rows, err := tx.Query(ctx, driftSQL, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, fmt.Errorf("read counters that differ from their procs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Proc, error) {
		var p Proc
		err := row.Scan(&p.Show, &p.Alloc, &p.Layer, &p.Job, &p.Folder, &p.Dept)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read counters that differ from their procs: %w", err)
	}
	return out, nil
}
