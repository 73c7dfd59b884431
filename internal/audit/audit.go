// Package audit checks the invariants cuesched promises (DESIGN.md, contract
// 1) against a database, in SQL: every test that books runs it afterwards,
// the demo and benchmarks report it, `cuesched audit` prints it and each
// instance exports its counts. Each finding names the keys involved so it
// points at the row to look at, and says whether it is illegal (a rule
// broken: a bug) or only over a limit that a later change left legal (a
// proc booked under a cap lowered afterwards, a proc of a show handed back
// while it runs: legal, and gone as those frames end).
//
// Which of the two an over-limit is, is read from the data: when each proc
// was booked (its launch outbox row's created_at, written in the booking
// transaction, or proc.ts_booked for Cuebot's procs) against when the limit
// last came down (cuesched.limit_change, written by triggers on Cuebot's
// tables: migration 0012). A limit is over only while procs hold more than
// it allows; had any of them been booked after the latest change, it was
// booked beside all the others (they still run) under a cap no higher than
// today's, so over it: illegal. When every one was booked before, the change
// put them over: left legal. A database without those tables (the
// Cuebot-only schema of some tests) has no recorded change: every over-limit
// is illegal there.
//
// A booking's time is its transaction's start. A booking locks the cap rows
// (and the host) it books against, so one that began after a change waited
// for it and read the new cap: called illegal, it was. One that began before
// a change and committed after it counts as booked before: the audit can miss
// such a booking over the new cap, and cannot tell it from one the change
// left over. A release is stamped as it commits (bookings read the show
// unlocked); a booking that began within the release's own commit (its WAL
// flush, a synchronous standby's acknowledgement) may have read the show
// still managed and is called illegal all the same. A proc over a limit both
// before and after a change (illegal under the old limit too) reads left
// legal: the old value is not kept.
package audit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind says whether a finding breaks a rule.
type Kind string

const (
	// Illegal is a broken rule: a bug, whatever happened meanwhile.
	Illegal Kind = "illegal"
	// LeftLegal is over a limit, by procs all booked before the change that
	// put them over (the limit lowered, the host moved, the show handed
	// back): legal, and gone as those frames end.
	LeftLegal Kind = "left-legal"
)

// Violation is one finding.
type Violation struct {
	Check  string `json:"check"` // which invariant, e.g. "host-reserved"
	Key    string `json:"key"`   // the row it concerns, e.g. a pk_host
	Kind   Kind   `json:"kind"`
	Detail string `json:"detail"` // what is wrong, and for an over-limit why it is of its kind
}

func (v Violation) String() string {
	return v.Check + " " + v.Key + " (" + string(v.Kind) + "): " + v.Detail
}

// Options select what Run checks.
type Options struct {
	// SkipCaps leaves out the cap checks, for a test that lowered a cap below
	// what already runs (it checks what was booked after the change instead).
	SkipCaps bool
	// AllowUnmanaged accepts Cuebot's procs: those of shows not
	// scheduler-managed that cuesched did not book (no launch outbox row),
	// and a cap they alone took over. Tests leave it false: no Cuebot books
	// there, so such a proc is ours and wrong. cuesched's own procs of a show
	// not managed are checked either way.
	AllowUnmanaged bool
	// SkipCounters leaves out the counter sums, for a farm whose counters
	// Cuebot maintains (--counters cuebot).
	SkipCounters bool
	// OutboxAge, when positive, reports launch outbox rows still pending or
	// unsure (neither launched nor released) this long after their booking.
	OutboxAge time.Duration
}

// Illegals is the illegal findings of vs.
func Illegals(vs []Violation) []Violation {
	var out []Violation
	for _, v := range vs {
		if v.Kind == Illegal {
			out = append(out, v)
		}
	}
	return out
}

type check struct {
	name  string
	kind  string // "", "counters", "caps", "unmanaged", "outbox"
	query string // returns (key text, kind text, detail text)
}

// booked is every proc with what the verdicts need: its host's allocation,
// when it was booked, and whether it counts as cuesched's ($1: AllowUnmanaged
// counts only procs with an outbox row and those of managed shows). ch is the
// recorded changes. Both are the WITH clause of the checks that use them.
const booked = `WITH booked AS (
		SELECT p.*, h.pk_alloc, coalesce(o.created_at, p.ts_booked) AS booked_at,
		       (o.proc_id IS NOT NULL OR NOT $1::bool OR coalesce(sh.b_scheduler_managed, false)) AS ours
		  FROM proc p
		  JOIN host h USING (pk_host)
		  LEFT JOIN show sh ON sh.pk_show = p.pk_show
		  LEFT JOIN {outbox} o ON o.proc_id = p.pk_proc),
	ch AS (SELECT what, key, changed_at FROM {changes} c)
	`

// verdict wraps an over-limit query whose rows are (key, detail, t, last):
// t the latest change of the limit, last the latest booking of cuesched's
// among the procs over it. It adds the kind and the reason.
func verdict(over string) string {
	return `SELECT key,
		CASE WHEN last IS NOT NULL AND (t IS NULL OR last > t) THEN 'illegal' ELSE 'left-legal' END,
		detail || CASE WHEN last IS NULL THEN ': none of them is cuesched''s'
			WHEN t IS NULL THEN format(': booked up to %s, and no change of the limit recorded', last::timestamptz(3))
			WHEN last > t THEN format(': booked up to %s, after the change at %s', last::timestamptz(3), t::timestamptz(3))
			ELSE format(': every one booked before the change at %s', t::timestamptz(3)) END
	FROM (` + over + `) x`
}

// The counters are checked against procs of scheduler-managed shows only:
// the rest are Cuebot's.
var checks = []check{
	{name: "host-idle-range", query: `
		SELECT pk_host, 'illegal', format('%s: idle cores %s of %s, memory %s of %s, GPUs %s of %s, GPU memory %s of %s',
		       str_name, int_cores_idle, int_cores, int_mem_idle, int_mem, int_gpus_idle, int_gpus,
		       int_gpu_mem_idle, int_gpu_mem)
		FROM host
		WHERE int_cores_idle NOT BETWEEN 0 AND int_cores OR int_mem_idle NOT BETWEEN 0 AND int_mem
		   OR int_gpus_idle NOT BETWEEN 0 AND int_gpus OR int_gpu_mem_idle NOT BETWEEN 0 AND int_gpu_mem`},
	{name: "host-reserved", query: `
		SELECT h.pk_host, 'illegal', format('%s: in use cores %s memory %s GPUs %s GPU memory %s, procs hold %s %s %s %s',
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
		SELECT f.pk_frame, 'illegal', CASE WHEN p.pk_proc IS NULL THEN format('%s is RUNNING on %s with no proc', f.str_name, f.str_host)
		       ELSE format('%s is RUNNING on %s with %s cores, its proc %s is on %s with %s cores', f.str_name,
		            f.str_host, f.int_cores, p.pk_proc, h.str_name, p.int_cores_reserved) END
		FROM frame f
		LEFT JOIN proc p ON p.pk_frame = f.pk_frame
		LEFT JOIN host h ON h.pk_host = p.pk_host
		WHERE f.str_state = 'RUNNING'
		  AND (p.pk_proc IS NULL OR h.str_name IS DISTINCT FROM f.str_host OR p.int_cores_reserved <> f.int_cores)`},
	{name: "proc-frame-state", query: `
		SELECT p.pk_proc, 'illegal', format('proc holds frame %s (%s), which is %s', f.pk_frame, f.str_name, f.str_state)
		FROM proc p JOIN frame f ON f.pk_frame = p.pk_frame
		WHERE f.str_state <> 'RUNNING'`},
	{name: "counter-subscription", kind: "counters", query: `
		SELECT s.pk_subscription, 'illegal', format('show %s on %s: cores %s GPUs %s, procs hold %s %s', sh.str_name, a.str_name,
		       s.int_cores, s.int_gpus, coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM subscription s
		JOIN show sh ON sh.pk_show = s.pk_show AND sh.b_scheduler_managed
		JOIN alloc a ON a.pk_alloc = s.pk_alloc
		LEFT JOIN (SELECT p.pk_show, h.pk_alloc, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN host h USING (pk_host) GROUP BY 1, 2) u
		       ON u.pk_show = s.pk_show AND u.pk_alloc = s.pk_alloc
		WHERE s.int_cores <> coalesce(u.cores, 0) OR s.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-layer", kind: "counters", query: `
		SELECT r.pk_layer, 'illegal', format('layer %s: cores %s GPUs %s, procs hold %s %s', l.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM layer_resource r
		JOIN layer l USING (pk_layer)
		JOIN job j ON j.pk_job = l.pk_job
		JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT pk_layer, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
		             FROM proc GROUP BY 1) u ON u.pk_layer = r.pk_layer
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-job", kind: "counters", query: `
		SELECT r.pk_job, 'illegal', format('job %s: cores %s GPUs %s, procs hold %s %s', j.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM job_resource r
		JOIN job j USING (pk_job)
		JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT pk_job, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
		             FROM proc GROUP BY 1) u ON u.pk_job = r.pk_job
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-folder", kind: "counters", query: `
		SELECT r.pk_folder, 'illegal', format('folder %s: cores %s GPUs %s, procs hold %s %s', f.str_name, r.int_cores, r.int_gpus,
		       coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM folder_resource r
		JOIN folder f USING (pk_folder)
		JOIN show sh ON sh.pk_show = f.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT j.pk_folder, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN job j USING (pk_job) GROUP BY 1) u ON u.pk_folder = r.pk_folder
		WHERE r.int_cores <> coalesce(u.cores, 0) OR r.int_gpus <> coalesce(u.gpus, 0)`},
	{name: "counter-point", kind: "counters", query: `
		SELECT pt.pk_point, 'illegal', format('point of show %s dept %s: cores %s GPUs %s, procs hold %s %s', sh.str_name,
		       pt.pk_dept, pt.int_cores, pt.int_gpus, coalesce(u.cores, 0), coalesce(u.gpus, 0))
		FROM point pt
		JOIN show sh ON sh.pk_show = pt.pk_show AND sh.b_scheduler_managed
		LEFT JOIN (SELECT j.pk_show, j.pk_dept, sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
		             FROM proc p JOIN job j USING (pk_job) GROUP BY 1, 2) u
		       ON u.pk_show = pt.pk_show AND u.pk_dept = pt.pk_dept
		WHERE pt.int_cores <> coalesce(u.cores, 0) OR pt.int_gpus <> coalesce(u.gpus, 0)`},
	// Caps are checked against what procs hold, so a wrong counter cannot
	// hide a breach. The host changes count for a subscription: a host moved
	// to another allocation takes its procs into another subscription.
	{name: "cap-burst", kind: "caps", query: booked + verdict(`
		SELECT s.pk_subscription AS key, format('show %s on %s: procs hold %s cores, burst %s', sh.str_name,
		       a.str_name, u.cores, s.int_burst) AS detail, greatest(sc.changed_at, u.host_changed) AS t, u.last
		FROM subscription s
		JOIN show sh USING (pk_show)
		JOIN alloc a ON a.pk_alloc = s.pk_alloc
		JOIN (SELECT b.pk_show, b.pk_alloc, sum(b.int_cores_reserved) AS cores,
		             max(b.booked_at) FILTER (WHERE b.ours) AS last, max(hc.changed_at) AS host_changed
		        FROM booked b LEFT JOIN ch hc ON hc.what = 'host' AND hc.key = b.pk_host GROUP BY 1, 2) u
		     ON u.pk_show = s.pk_show AND u.pk_alloc = s.pk_alloc
		LEFT JOIN ch sc ON sc.what = 'subscription' AND sc.key = s.pk_subscription
		WHERE u.cores > s.int_burst`)},
	{name: "cap-job", kind: "caps", query: booked + verdict(`
		SELECT r.pk_job AS key, format('job %s: procs hold %s cores (max %s), %s GPUs (max %s)', j.str_name, u.cores,
		       r.int_max_cores, u.gpus, r.int_max_gpus) AS detail, jc.changed_at AS t, u.last
		FROM job_resource r
		JOIN job j USING (pk_job)
		JOIN (SELECT pk_job, sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus,
		             max(booked_at) FILTER (WHERE ours) AS last
		        FROM booked GROUP BY 1) u ON u.pk_job = r.pk_job
		LEFT JOIN ch jc ON jc.what = 'job' AND jc.key = r.pk_job
		WHERE u.cores > r.int_max_cores OR u.gpus > r.int_max_gpus`)},
	{name: "cap-folder", kind: "caps", query: booked + verdict(`
		SELECT r.pk_folder AS key, format('folder %s: procs hold %s cores (max %s), %s GPUs (max %s)', f.str_name,
		       u.cores, r.int_max_cores, u.gpus, r.int_max_gpus) AS detail, fc.changed_at AS t, u.last
		FROM folder_resource r
		JOIN folder f USING (pk_folder)
		JOIN (SELECT j.pk_folder, sum(b.int_cores_reserved) AS cores, sum(b.int_gpus_reserved) AS gpus,
		             max(b.booked_at) FILTER (WHERE b.ours) AS last
		        FROM booked b JOIN job j USING (pk_job) GROUP BY 1) u ON u.pk_folder = r.pk_folder
		LEFT JOIN ch fc ON fc.what = 'folder' AND fc.key = r.pk_folder
		WHERE (r.int_max_cores >= 0 AND u.cores > r.int_max_cores) OR (r.int_max_gpus >= 0 AND u.gpus > r.int_max_gpus)`)},
	{name: "cap-limit", kind: "caps", query: booked + verdict(`
		SELECT lr.pk_limit_record AS key, format('limit %s: %s frames running, max %s', lr.str_name, u.running,
		       lr.int_max_value) AS detail, lc.changed_at AS t, u.last
		FROM limit_record lr
		JOIN (SELECT ll.pk_limit_record, count(*) AS running, max(b.booked_at) FILTER (WHERE b.ours) AS last
		        FROM layer_limit ll JOIN frame f ON f.pk_layer = ll.pk_layer AND f.str_state = 'RUNNING'
		        LEFT JOIN booked b ON b.pk_frame = f.pk_frame
		       GROUP BY 1) u USING (pk_limit_record)
		LEFT JOIN ch lc ON lc.what = 'limit' AND lc.key = lr.pk_limit_record
		WHERE u.running > lr.int_max_value`)},
	// A proc of a show handed back is left legal when booked before the
	// release committed (a booking may have read the show managed until then).
	{name: "unmanaged-proc", kind: "unmanaged", query: booked + verdict(`
		SELECT b.pk_proc AS key, format('proc of show %s, which is not scheduler-managed', sh.str_name) AS detail,
		       sc.changed_at AS t, b.booked_at AS last
		FROM booked b
		JOIN show sh ON sh.pk_show = b.pk_show
		LEFT JOIN ch sc ON sc.what = 'show' AND sc.key = b.pk_show
		WHERE NOT sh.b_scheduler_managed AND b.ours`)},
	// A booking neither launched nor released that long: a frame held.
	{name: "outbox-stale", kind: "outbox", query: `
		SELECT o.proc_id, 'illegal', format('booking of frame %s on %s still %s %s after it was booked (%s launch attempts)',
		       coalesce(f.str_name, o.frame_id), o.host_name, o.state, date_trunc('second', now() - o.created_at), o.attempts)
		FROM {outbox} o
		LEFT JOIN frame f ON f.pk_frame = o.frame_id
		WHERE o.state IN ('pending', 'unsure') AND o.created_at < now() - make_interval(secs => $1)`},
}

// Querier is what Run needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

var _ Querier = (*pgxpool.Pool)(nil)

// Stand-ins for cuesched's tables on a database without its migrations:
// no outbox row, no recorded change.
const (
	noOutbox  = `(SELECT ''::varchar AS proc_id, now() AS created_at WHERE false)`
	noChanges = `(SELECT ''::text AS what, ''::varchar AS key, now() AS changed_at WHERE false)`
)

// Run checks every selected invariant and returns all findings, ordered by
// check then key. It only reads (a role with `cuesched grants` may run it).
func Run(ctx context.Context, q Querier, opts Options) ([]Violation, error) {
	var hasOutbox, hasChanges bool
	if err := queryRow(ctx, q, `SELECT to_regclass('cuesched.launch_outbox') IS NOT NULL,
		to_regclass('cuesched.limit_change') IS NOT NULL`, &hasOutbox, &hasChanges); err != nil {
		return nil, fmt.Errorf("audit: look for cuesched's tables: %w", err)
	}
	outbox, changes := "cuesched.launch_outbox", "cuesched.limit_change"
	if !hasOutbox {
		outbox = noOutbox
	}
	if !hasChanges {
		changes = noChanges
	}
	tables := strings.NewReplacer("{outbox}", outbox, "{changes}", changes)
	var out []Violation
	for _, c := range checks {
		var args []any
		switch {
		case c.kind == "caps" && opts.SkipCaps,
			c.kind == "counters" && opts.SkipCounters,
			c.kind == "outbox" && (opts.OutboxAge <= 0 || !hasOutbox):
			continue
		case c.kind == "outbox":
			args = []any{opts.OutboxAge.Seconds()}
		case c.kind == "caps" || c.kind == "unmanaged":
			args = []any{opts.AllowUnmanaged}
		}
		rows, err := q.Query(ctx, tables.Replace(c.query)+" ORDER BY 1", args...)
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", c.name, err)
		}
		for rows.Next() {
			v := Violation{Check: c.name}
			if err := rows.Scan(&v.Key, &v.Kind, &v.Detail); err != nil {
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

// Snapshot runs Run in one read-only transaction (REPEATABLE READ), so that
// every check reads the same moment of a live farm: a counter and the procs
// it sums, an outbox row and its proc, cannot be read apart.
func Snapshot(ctx context.Context, pool *pgxpool.Pool, opts Options) ([]Violation, error) {
	var vs []Violation
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			var err error
			vs, err = Run(ctx, tx, opts)
			return err
		})
	return vs, err
}

// Checks is the name of every check Run may report, in its order.
func Checks() []string {
	names := make([]string, len(checks))
	for i, c := range checks {
		names[i] = c.name
	}
	return names
}

func queryRow(ctx context.Context, q Querier, sql string, dest ...any) error {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// Summary is a one-line account of violations for logs and the demo.
func Summary(vs []Violation) string {
	if len(vs) == 0 {
		return "audit clean"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d audit findings (%d illegal):", len(vs), len(Illegals(vs)))
	for i, v := range vs {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(vs)-10)
			break
		}
		b.WriteString(" [" + v.String() + "]")
	}
	return b.String()
}
