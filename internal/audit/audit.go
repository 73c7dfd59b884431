// Package audit checks the invariants cuesched promises (DESIGN.md, contract
// 1) against a database, in SQL: every test that books runs it afterwards,
// and the demo and benchmarks report it. Each violation names the keys
// involved so a failure points at the row to look at.
package audit

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Violation is one broken invariant.
type Violation struct {
	Check  string // which invariant, e.g. "host-reserved"
	Key    string // the row it concerns, e.g. a pk_host
	Detail string
}

func (v Violation) String() string { return v.Check + " " + v.Key + ": " + v.Detail }

// Options select what Run checks.
type Options struct {
	// SkipCaps leaves out the cap checks, for a test that lowered a cap below
	// what already runs (it checks what was booked after the change instead).
	SkipCaps bool
	// AllowUnmanaged accepts procs of shows that are not scheduler-managed.
	// Tests leave it false: no Cuebot books there, so such a proc is ours
	// and wrong.
	AllowUnmanaged bool
	// SkipCounters leaves out the counter sums, for a farm whose counters
	// Cuebot maintains (--counters cuebot).
	SkipCounters bool
}

type check struct {
	name  string
	kind  string // "", "counters", "caps", "unmanaged"
	query string // returns (key text, detail text)
}

// The counters are checked against procs of scheduler-managed shows only:
// the rest are Cuebot's.
var checks = []check{
	{name: "host-idle-range", query: `
		SELECT pk_host, format('%s: idle cores %s of %s, memory %s of %s, GPUs %s of %s, GPU memory %s of %s',
		       str_name, int_cores_idle, int_cores, int_mem_idle, int_mem, int_gpus_idle, int_gpus,
		       int_gpu_mem_idle, int_gpu_mem)
		FROM host
		WHERE int_cores_idle NOT BETWEEN 0 AND int_cores OR int_mem_idle NOT BETWEEN 0 AND int_mem
		   OR int_gpus_idle NOT BETWEEN 0 AND int_gpus OR int_gpu_mem_idle NOT BETWEEN 0 AND int_gpu_mem`},
	{name: "host-reserved", query: `
		SELECT h.pk_host, format('%s: in use cores %s memory %s GPUs %s GPU memory %s, procs hold %s %s %s %s',
		       h.str_name, h.int_cores - h.int_cores_idle, h.int_mem - h.int_mem_idle, h.int_gpus - h.int_gpus_idle,
		       h.int_gpu_mem - h.int_gpu_mem_idle, coalesce(p.cores, 0), coalesce(p.mem, 0), coalesce(p.gpus, 0),
		       coalesce(p.gpu_mem, 0))
		FROM host h
		LEFT JOIN (SELECT pk_host, sum(int_cores_reserved) AS cores, sum(int_mem_reserved) AS mem,
		                  sum(int_gpus_reserved) AS gpus, sum(int_gpu_mem_reserved) AS gpu_mem
		             FROM proc GROUP BY pk_host) p USING (pk_host)
		WHERE h.int_cores - h.int_cores_idle <> coalesce(p.cores, 0)
		   OR h.int_mem - h.int_mem_idle <> coalesce(p.mem, 0)
		   OR h.int_gpus - h.int_gpus_idle <> coalesce(p.gpus, 0)
		   OR h.int_gpu_mem - h.int_gpu_mem_idle <> coalesce(p.gpu_mem, 0)`},
	{name: "running-frame-proc", query: `
		SELECT f.pk_frame, CASE WHEN p.pk_proc IS NULL THEN format('%s is RUNNING on %s with no proc', f.str_name, f.str_host)
		       ELSE format('%s is RUNNING on %s with %s cores, its proc %s is on %s with %s cores', f.str_name,
		            f.str_host, f.int_cores, p.pk_proc, h.str_name, p.int_cores_reserved) END
		FROM frame f
		LEFT JOIN proc p ON p.pk_frame = f.pk_frame
		LEFT JOIN host h ON h.pk_host = p.pk_host
		WHERE f.str_state = 'RUNNING'
		  AND (p.pk_proc IS NULL OR h.str_name IS DISTINCT FROM f.str_host OR p.int_cores_reserved <> f.int_cores)`},
	{name: "proc-frame-state", query: `
		SELECT p.pk_proc, format('proc holds frame %s (%s), which is %s', f.pk_frame, f.str_name, f.str_state)
		FROM proc p JOIN frame f ON f.pk_frame = p.pk_frame
		WHERE f.str_state <> 'RUNNING'`},
	{name: "counter-subscription", kind: "counters", query: `
		SELECT s.pk_subscription, format('show %s on %s: cores %s GPUs %s, procs hold %s %s', sh.str_name, a.str_name,
		       s.int_cores, s.int_gpus, coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM subscription s
		JOIN show sh ON sh.pk_show = s.pk_show AND sh.b_scheduler_managed
		JOIN alloc a ON a.pk_alloc = s.pk_alloc
		LEFT JOIN (SELECT p.pk_show, h.pk_alloc, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN host h USING (pk_host) GROUP BY 1, 2) u
		       ON u.pk_show = s.pk_show AND u.pk_alloc = s.pk_alloc
		WHERE s.int_cores <> coalesce(u.cores, 0) OR s.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-layer", kind: "counters", query: `
		SELECT r.pk_layer, format('layer %s: cores %s GPUs %s, procs hold %s %s', l.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM layer_resource r
		JOIN layer l USING (pk_layer)
		JOIN job j ON j.pk_job = l.pk_job
		JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT pk_layer, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
		             FROM proc GROUP BY 1) u ON u.pk_layer = r.pk_layer
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-job", kind: "counters", query: `
		SELECT r.pk_job, format('job %s: cores %s GPUs %s, procs hold %s %s', j.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM job_resource r
		JOIN job j USING (pk_job)
		JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT pk_job, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
		             FROM proc GROUP BY 1) u ON u.pk_job = r.pk_job
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-folder", kind: "counters", query: `
		SELECT r.pk_folder, format('folder %s: cores %s GPUs %s, procs hold %s %s', f.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM folder_resource r
		JOIN folder f USING (pk_folder)
		JOIN show sh ON sh.pk_show = f.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT j.pk_folder, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN job j USING (pk_job) GROUP BY 1) u ON u.pk_folder = r.pk_folder
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-point", kind: "counters", query: `
		SELECT pt.pk_point, format('point of show %s dept %s: cores %s GPUs %s, procs hold %s %s', sh.str_name,
		       pt.pk_dept, pt.int_cores, pt.int_gpus, coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM point pt
		JOIN show sh ON sh.pk_show = pt.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT j.pk_show, j.pk_dept, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN job j USING (pk_job) GROUP BY 1, 2) u
		       ON u.pk_show = pt.pk_show AND u.pk_dept = pt.pk_dept
		WHERE pt.int_cores <> coalesce(u.cores, 0) OR pt.int_gpus <> coalesce(u.gpus, 0)`},
	// Caps are checked against what procs hold, so a wrong counter cannot
	// hide a breach.
	{name: "cap-burst", kind: "caps", query: `
		SELECT s.pk_subscription, format('show %s on %s: procs hold %s cores, burst %s', sh.str_name, a.str_name,
		       u.cores, s.int_burst)
		FROM subscription s
		JOIN show sh USING (pk_show)
		JOIN alloc a ON a.pk_alloc = s.pk_alloc
		JOIN (SELECT p.pk_show, h.pk_alloc, sum(p.int_cores_reserved) AS cores
		        FROM proc p JOIN host h USING (pk_host) GROUP BY 1, 2) u
		     ON u.pk_show = s.pk_show AND u.pk_alloc = s.pk_alloc
		WHERE u.cores > s.int_burst`},
	{name: "cap-job", kind: "caps", query: `
		SELECT r.pk_job, format('job %s: procs hold %s cores (max %s), %s GPUs (max %s)', j.str_name, u.cores,
		       r.int_max_cores, u.gpus, r.int_max_gpus)
		FROM job_resource r
		JOIN job j USING (pk_job)
		JOIN (SELECT pk_job, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
		        FROM proc GROUP BY 1) u ON u.pk_job = r.pk_job
		WHERE u.cores > r.int_max_cores OR u.gpus > r.int_max_gpus`},
	{name: "cap-folder", kind: "caps", query: `
		SELECT r.pk_folder, format('folder %s: procs hold %s cores (max %s), %s GPUs (max %s)', f.str_name, u.cores,
		       r.int_max_cores, u.gpus, r.int_max_gpus)
		FROM folder_resource r
		JOIN folder f USING (pk_folder)
		JOIN (SELECT j.pk_folder, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		        FROM proc p JOIN job j USING (pk_job) GROUP BY 1) u ON u.pk_folder = r.pk_folder
		WHERE (r.int_max_cores >= 0 AND u.cores > r.int_max_cores) OR (r.int_max_gpus >= 0 AND u.gpus > r.int_max_gpus)`},
	{name: "cap-limit", kind: "caps", query: `
		SELECT lr.pk_limit_record, format('limit %s: %s frames running, max %s', lr.str_name, u.running, lr.int_max_value)
		FROM limit_record lr
		JOIN (SELECT ll.pk_limit_record, count(*) AS running
		        FROM layer_limit ll JOIN frame f ON f.pk_layer = ll.pk_layer AND f.str_state = 'RUNNING'
		       GROUP BY 1) u USING (pk_limit_record)
		WHERE u.running > lr.int_max_value`},
	{name: "unmanaged-proc", kind: "unmanaged", query: `
		SELECT p.pk_proc, format('proc of show %s, which is not scheduler-managed', sh.str_name)
		FROM proc p JOIN show sh USING (pk_show)
		WHERE NOT sh.b_scheduler_managed`},
}

// Querier is what Run needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

var _ Querier = (*pgxpool.Pool)(nil)

// Run checks every selected invariant and returns all violations, ordered by
// check then key.
func Run(ctx context.Context, q Querier, opts Options) ([]Violation, error) {
	var out []Violation
	for _, c := range checks {
		switch {
		case c.kind == "caps" && opts.SkipCaps,
			c.kind == "counters" && opts.SkipCounters,
			c.kind == "unmanaged" && opts.AllowUnmanaged:
			continue
		}
		rows, err := q.Query(ctx, c.query+" ORDER BY 1")
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", c.name, err)
		}
		for rows.Next() {
			v := Violation{Check: c.name}
			if err := rows.Scan(&v.Key, &v.Detail); err != nil {
				rows.Close()
				return nil, fmt.Errorf("audit %s: %w", c.name, err)
			}
			out = append(out, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("audit %s: %w", c.name, err)
		}
	}
	return out, nil
}

// Summary is a one-line account of violations for logs and the demo.
func Summary(vs []Violation) string {
	if len(vs) == 0 {
		return "audit clean"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d audit violations:", len(vs))
	for i, v := range vs {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(vs)-10)
			break
		}
		b.WriteString(" [" + v.String() + "]")
	}
	return b.String()
}
