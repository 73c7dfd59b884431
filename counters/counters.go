// Package counters brings the five usage counters of scheduler-managed shows
// (subscription, layer_resource, job_resource, folder_resource, point) back to
// the sum of their procs.
//
// Cuebot from mid-2026 no longer lowers these counters when it releases a
// proc of a managed show (it notifies acct_release and leaves them to the
// scheduler), so cuesched owns them: a booking raises them in its own
// transaction, and after releases and compensations the rows a change
// touched are recomputed here. A recompute locks the counter rows first (FOR
// UPDATE, in DESIGN.md's lock order, each table's rows sorted by key) and
// sets each to SUM(proc) in a following statement of the same transaction,
// so the sum sees every booking committed before the lock was granted. It is
// idempotent: a duplicate recompute is harmless.
//
// The Writer (writer.go) runs the recomputes after the releases, host moves
// and snapshots a replica of the database reports (cache.CounterChanges,
// adapted by internal/instance): the replica itself writes nothing.
package counters

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ShowAlloc keys a subscription row.
type ShowAlloc struct{ Show, Alloc string }

// ShowDept keys a point row.
type ShowDept struct{ Show, Dept string }

// Rows is a set of counter rows to recompute.
type Rows struct {
	subs    map[ShowAlloc]struct{}
	layers  map[string]struct{}
	jobs    map[string]struct{}
	folders map[string]struct{}
	points  map[ShowDept]struct{}
	// released are shows handed back to Cuebot whose rows are recomputed
	// although no longer managed (RecomputeReleased).
	released []string
}

// Proc is what a proc contributes to: the rows its cores are counted in.
type Proc struct {
	Show, Alloc, Layer, Job, Folder, Dept string
}

// Add marks every counter row a proc is counted in.
func (r *Rows) Add(p Proc) {
	r.add(p.Show, p.Alloc, p.Layer, p.Job, p.Folder, p.Dept)
}

// add marks the rows whose keys are given; empty keys mark nothing.
func (r *Rows) add(show, alloc, layer, job, folder, dept string) {
	if r.subs == nil {
		r.subs, r.layers, r.jobs = map[ShowAlloc]struct{}{}, map[string]struct{}{}, map[string]struct{}{}
		r.folders, r.points = map[string]struct{}{}, map[ShowDept]struct{}{}
	}
	if alloc != "" {
		r.subs[ShowAlloc{show, alloc}] = struct{}{}
	}
	if layer != "" {
		r.layers[layer] = struct{}{}
	}
	if job != "" {
		r.jobs[job] = struct{}{}
	}
	if folder != "" {
		r.folders[folder] = struct{}{}
	}
	if dept != "" {
		r.points[ShowDept{show, dept}] = struct{}{}
	}
}

// Refusal is a counter row a guard trigger refused to set to its sum.
type Refusal struct {
	Table string // subscription, layer_resource, job_resource, folder_resource or point
	Key   string // the row's primary key
	Row   Proc   // marks this row alone (Rows.Add), to recompute it again
	Err   string // the guard's message
}

// Has reports whether the one row row marks (a Refusal.Row) is marked.
func (r *Rows) Has(row Proc) bool {
	var ok bool
	switch {
	case row.Alloc != "":
		_, ok = r.subs[ShowAlloc{row.Show, row.Alloc}]
	case row.Layer != "":
		_, ok = r.layers[row.Layer]
	case row.Job != "":
		_, ok = r.jobs[row.Job]
	case row.Folder != "":
		_, ok = r.folders[row.Folder]
	case row.Dept != "":
		_, ok = r.points[ShowDept{row.Show, row.Dept}]
	}
	return ok
}

// Len is the number of rows marked.
func (r *Rows) Len() int {
	return len(r.subs) + len(r.layers) + len(r.jobs) + len(r.folders) + len(r.points)
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Recompute locks the marked rows in the lock order and sets each to the sum
// of its procs, in the caller's transaction. Rows of shows that are not
// scheduler-managed are left alone: they are Cuebot's (but for a show being
// handed back, RecomputeReleased).
//
// A row whose sum a guard trigger refuses (a host with running procs moved
// to an allocation where the show is near its burst) blocks no other row:
// it is held at its cap, so nothing more books against it, and returned.
// Recompute it again when its rows change (Refusal.Row).
func Recompute(ctx context.Context, tx pgx.Tx, r Rows) ([]Refusal, error) {
	if r.Len() == 0 {
		return nil, nil
	}
	var subShows, subAllocs, ptShows, ptDepts []string
	for k := range r.subs {
		subShows, subAllocs = append(subShows, k.Show), append(subAllocs, k.Alloc)
	}
	for k := range r.points {
		ptShows, ptDepts = append(ptShows, k.Show), append(ptDepts, k.Dept)
	}
	layers, jobs, folders := sortedKeys(r.layers), sortedKeys(r.jobs), sortedKeys(r.folders)
	rel := r.released
	if rel == nil {
		rel = []string{}
	}

	// Lock first, in DESIGN.md's order, then sum: the sums run after every
	// lock is granted, so no booking can commit between sum and write.
	for _, lock := range []struct {
		name string
		sql  string
		args []any
	}{
		{"subscription", `SELECT 1 FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show AND ` + owned(3) + `
			JOIN unnest($1::text[], $2::text[]) k(show, alloc) ON s.pk_show = k.show AND s.pk_alloc = k.alloc
			ORDER BY s.pk_subscription FOR UPDATE OF s`, []any{subShows, subAllocs, rel}},
		{"layer_resource", `SELECT 1 FROM layer_resource WHERE pk_layer = ANY($1) ORDER BY pk_layer_resource FOR UPDATE`,
			[]any{layers}},
		{"job_resource", `SELECT 1 FROM job_resource WHERE pk_job = ANY($1) ORDER BY pk_job_resource FOR UPDATE`,
			[]any{jobs}},
		{"folder_resource", `SELECT 1 FROM folder_resource WHERE pk_folder = ANY($1) ORDER BY pk_folder_resource FOR UPDATE`,
			[]any{folders}},
		{"point", `SELECT 1 FROM point p JOIN show sh ON sh.pk_show = p.pk_show AND ` + owned(3) + `
			JOIN unnest($1::text[], $2::text[]) k(show, dept) ON p.pk_show = k.show AND p.pk_dept = k.dept
			ORDER BY p.pk_point FOR UPDATE OF p`, []any{ptShows, ptDepts, rel}},
	} {
		if _, err := tx.Exec(ctx, lock.sql, lock.args...); err != nil {
			return nil, fmt.Errorf("recompute counters: lock %s: %w", lock.name, err)
		}
	}
	subs := update{table: "subscription", pk: "pk_subscription", keys: [][]string{subShows, subAllocs}, released: rel,
		capCores: "t.int_burst", capGPUs: "NULL",
		mark: func(k []string) Proc { return Proc{Show: k[0], Alloc: k[1]} }, values: `
			FROM unnest($1::text[], $2::text[]) k(show, alloc)
			JOIN show sh ON sh.pk_show = k.show AND ` + owned(3) + `
			JOIN subscription t ON t.pk_show = k.show AND t.pk_alloc = k.alloc
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN host h ON h.pk_host = p.pk_host
			                    WHERE p.pk_show = k.show AND h.pk_alloc = k.alloc) u ON true`}
	lays := update{table: "layer_resource", pk: "pk_layer_resource", keys: [][]string{layers}, released: rel,
		capCores: "NULL", capGPUs: "NULL",
		mark: func(k []string) Proc { return Proc{Layer: k[0]} }, values: `
			FROM layer l JOIN job j ON j.pk_job = l.pk_job JOIN show sh ON sh.pk_show = j.pk_show AND ` + owned(2) + `
			JOIN layer_resource t ON t.pk_layer = l.pk_layer
			LEFT JOIN LATERAL (SELECT sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
			                     FROM proc WHERE pk_layer = l.pk_layer) u ON true
			WHERE l.pk_layer = ANY($1)`}
	jobRes := update{table: "job_resource", pk: "pk_job_resource", keys: [][]string{jobs}, released: rel,
		capCores: "t.int_max_cores", capGPUs: "t.int_max_gpus",
		mark: func(k []string) Proc { return Proc{Job: k[0]} }, values: `
			FROM job j JOIN show sh ON sh.pk_show = j.pk_show AND ` + owned(2) + `
			JOIN job_resource t ON t.pk_job = j.pk_job
			LEFT JOIN LATERAL (SELECT sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
			                     FROM proc WHERE pk_job = j.pk_job) u ON true
			WHERE j.pk_job = ANY($1)`}
	// folder_resource caps are -1 for unlimited, and Cuebot has no guard on
	// them: a folder's sum is never refused, so it is never held.
	folds := update{table: "folder_resource", pk: "pk_folder_resource", keys: [][]string{folders}, released: rel,
		capCores: "NULL", capGPUs: "NULL",
		mark: func(k []string) Proc { return Proc{Folder: k[0]} }, values: `
			FROM folder f JOIN show sh ON sh.pk_show = f.pk_show AND ` + owned(2) + `
			JOIN folder_resource t ON t.pk_folder = f.pk_folder
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN job j ON j.pk_job = p.pk_job WHERE j.pk_folder = f.pk_folder) u ON true
			WHERE f.pk_folder = ANY($1)`}
	pts := update{table: "point", pk: "pk_point", keys: [][]string{ptShows, ptDepts}, released: rel,
		capCores: "NULL", capGPUs: "NULL",
		mark: func(k []string) Proc { return Proc{Show: k[0], Dept: k[1]} }, values: `
			FROM unnest($1::text[], $2::text[]) k(show, dept)
			JOIN show sh ON sh.pk_show = k.show AND ` + owned(3) + `
			JOIN point t ON t.pk_show = k.show AND t.pk_dept = k.dept
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN job j ON j.pk_job = p.pk_job
			                    WHERE p.pk_show = k.show AND j.pk_dept = k.dept) u ON true`}
	ups := []update{subs, lays, jobRes, folds, pts}

	// All tables in one savepoint first: a guard refuses a row rarely, and
	// a refused row must not abort the rows of the others (nor the caller's
	// writes). Only when one does are the tables, then their rows, tried
	// apart.
	err := inSavepoint(ctx, tx, func(sp pgx.Tx) error {
		for _, u := range ups {
			if err := u.run(ctx, sp, u.keys, false); err != nil {
				return err
			}
		}
		return nil
	})
	if !refusedByGuard(err) {
		if err != nil {
			return nil, fmt.Errorf("recompute counters: %w", err)
		}
		return nil, nil
	}
	var refused []Refusal
	for _, u := range ups {
		idx := make([]int, len(u.keys[0]))
		for i := range idx {
			idx[i] = i
		}
		rs, err := u.settle(ctx, tx, idx)
		if err != nil {
			return nil, fmt.Errorf("recompute counters: %s: %w", u.table, err)
		}
		refused = append(refused, rs...)
	}
	return refused, nil
}

// update sets one counter table's rows to their sums.
type update struct {
	table, pk string
	// keys holds the rows' keys, one slice per key column ($1, $2, ...).
	keys [][]string
	// released is the parameter after the keys: the shows recomputed
	// although not managed (owned).
	released []string
	// values joins the keys to the counter rows (alias t) and their sums
	// (alias u, columns cores and gpus).
	values string
	// capCores and capGPUs are the columns a guard holds the counter to,
	// "NULL" where no guard does.
	capCores, capGPUs string
	mark              func(key []string) Proc
}

// setTo is the value counter column int_<col> is set to: its sum, but when
// clamp (parameter $n) asks and the sum grows past the cap, it is held at
// the cap (or where it was, when already above it), which is what the
// guard accepts and what the re-check reads as "at its limit".
func setTo(col, cap string, n int) string {
	return fmt.Sprintf(`CASE WHEN $%d AND coalesce(u.%s, 0) > t.int_%s
		THEN greatest(t.int_%s, least(coalesce(u.%s, 0), %s)) ELSE coalesce(u.%s, 0) END`, n, col, col, col, col, cap, col)
}

// owned is the condition on show sh under which a counter row is ours to
// recompute: a managed show, or one of the released shows (parameter $n).
func owned(n int) string {
	return fmt.Sprintf("(sh.b_scheduler_managed OR sh.pk_show = ANY($%d::text[]))", n)
}

// args are the parameters of values: the keys, then the released shows.
func (u update) args(keys [][]string) []any {
	return append(stringArgs(keys), u.released)
}

// run sets the rows of keys, held at their caps when clamp.
func (u update) run(ctx context.Context, tx pgx.Tx, keys [][]string, clamp bool) error {
	n := len(keys) + 2
	sql := fmt.Sprintf(`WITH v AS (SELECT t.%s AS pk, %s AS cores, %s AS gpus %s)
		UPDATE %s r SET int_cores = v.cores, int_gpus = v.gpus FROM v
		 WHERE r.%s = v.pk AND (r.int_cores, r.int_gpus) IS DISTINCT FROM (v.cores, v.gpus)`,
		u.pk, setTo("cores", u.capCores, n), setTo("gpus", u.capGPUs, n), u.values, u.table, u.pk)
	_, err := tx.Exec(ctx, sql, append(u.args(keys), clamp)...)
	return err
}

// settle sets the rows idx (indexes into keys) in a savepoint; when a guard
// refuses, it halves them until the refused rows stand alone, so a few
// refused rows among thousands cost a few dozen statements. A refused row
// is held at its cap and returned.
func (u update) settle(ctx context.Context, tx pgx.Tx, idx []int) ([]Refusal, error) {
	if len(idx) == 0 {
		return nil, nil
	}
	keys := make([][]string, len(u.keys))
	for c, col := range u.keys {
		for _, i := range idx {
			keys[c] = append(keys[c], col[i])
		}
	}
	err := inSavepoint(ctx, tx, func(sp pgx.Tx) error { return u.run(ctx, sp, keys, false) })
	switch {
	case err == nil:
		return nil, nil
	case !refusedByGuard(err):
		return nil, err
	case len(idx) > 1:
		a, err := u.settle(ctx, tx, idx[:len(idx)/2])
		if err != nil {
			return nil, err
		}
		b, err := u.settle(ctx, tx, idx[len(idx)/2:])
		return append(a, b...), err
	}
	var pe *pgconn.PgError
	errors.As(err, &pe)
	key := make([]string, len(keys))
	for c := range keys {
		key[c] = keys[c][0]
	}
	ref := Refusal{Table: u.table, Row: u.mark(key), Err: pe.Message}
	if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT t.%s %s`, u.pk, u.values), u.args(keys)...).
		Scan(&ref.Key); err != nil {
		return nil, fmt.Errorf("read the key of a refused row: %w", err)
	}
	// A guard may refuse the held value too (job_resource's checks cores
	// and GPUs together): the row then keeps what it had.
	if err := inSavepoint(ctx, tx, func(sp pgx.Tx) error { return u.run(ctx, sp, keys, true) }); err != nil &&
		!refusedByGuard(err) {
		return nil, err
	}
	return []Refusal{ref}, nil
}

func stringArgs(keys [][]string) []any {
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out
}

// refusedByGuard reports whether err is a guard trigger's RAISE EXCEPTION.
func refusedByGuard(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "P0001"
}

// inSavepoint runs fn in a savepoint of tx, rolled back to when fn fails so
// that tx goes on.
func inSavepoint(ctx context.Context, tx pgx.Tx, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, tx, fn)
}

// RecomputeShows recomputes every counter row of the given managed shows,
// for an instance that starts or takes a cluster over: releases that happened
// while no stream ran left them high. It returns the rows refused, as
// Recompute does.
func RecomputeShows(ctx context.Context, tx pgx.Tx, shows []string) ([]Refusal, error) {
	r, err := showRows(ctx, tx, shows)
	if err != nil {
		return nil, err
	}
	return Recompute(ctx, tx, r)
}

// RecomputeReleased recomputes every counter row of one show handed back to
// Cuebot (no longer managed), once no Cuebot release can still take it for
// managed: from then on Cuebot keeps the rows in its own transactions, so
// they must start from their sums. It returns the rows refused, as Recompute
// does.
func RecomputeReleased(ctx context.Context, tx pgx.Tx, show string) ([]Refusal, error) {
	r, err := showRows(ctx, tx, []string{show})
	if err != nil {
		return nil, err
	}
	r.released = []string{show}
	return Recompute(ctx, tx, r)
}

// showRows marks every counter row of the given shows: their subscriptions,
// folders and points, and the layers and jobs of their unfinished jobs (or
// finished ones still holding procs).
func showRows(ctx context.Context, tx pgx.Tx, shows []string) (Rows, error) {
	var r Rows
	rows, err := tx.Query(ctx, `
		SELECT s.pk_show, s.pk_alloc, '', '', '', '' FROM subscription s WHERE s.pk_show = ANY($1)
		UNION ALL
		SELECT j.pk_show, '', l.pk_layer, j.pk_job, j.pk_folder, j.pk_dept
		  FROM job j JOIN layer l ON l.pk_job = j.pk_job
		 WHERE j.pk_show = ANY($1) AND (j.str_state = 'PENDING' OR EXISTS (SELECT FROM proc p WHERE p.pk_job = j.pk_job))
		UNION ALL
		SELECT f.pk_show, '', '', '', f.pk_folder, '' FROM folder f WHERE f.pk_show = ANY($1)
		UNION ALL
		SELECT p.pk_show, '', '', '', '', p.pk_dept FROM point p WHERE p.pk_show = ANY($1)`, shows)
	if err != nil {
		return r, fmt.Errorf("recompute counters of shows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var show, alloc, layer, job, folder, dept string
		if err := rows.Scan(&show, &alloc, &layer, &job, &folder, &dept); err != nil {
			return r, fmt.Errorf("recompute counters of shows: %w", err)
		}
		r.add(show, alloc, layer, job, folder, dept)
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("recompute counters of shows: %w", err)
	}
	return r, nil
}
