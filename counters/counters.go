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
package counters

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
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
// scheduler-managed are left alone: they are Cuebot's.
func Recompute(ctx context.Context, tx pgx.Tx, r Rows) error {
	if r.Len() == 0 {
		return nil
	}
	var subShows, subAllocs, ptShows, ptDepts []string
	for k := range r.subs {
		subShows, subAllocs = append(subShows, k.Show), append(subAllocs, k.Alloc)
	}
	for k := range r.points {
		ptShows, ptDepts = append(ptShows, k.Show), append(ptDepts, k.Dept)
	}
	layers, jobs, folders := sortedKeys(r.layers), sortedKeys(r.jobs), sortedKeys(r.folders)

	// Lock first, in DESIGN.md's order, then sum: the sums run after every
	// lock is granted, so no booking can commit between sum and write.
	for _, lock := range []struct {
		name string
		sql  string
		args []any
	}{
		{"subscription", `SELECT 1 FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show AND sh.b_scheduler_managed
			JOIN unnest($1::text[], $2::text[]) k(show, alloc) ON s.pk_show = k.show AND s.pk_alloc = k.alloc
			ORDER BY s.pk_subscription FOR UPDATE OF s`, []any{subShows, subAllocs}},
		{"layer_resource", `SELECT 1 FROM layer_resource WHERE pk_layer = ANY($1) ORDER BY pk_layer_resource FOR UPDATE`,
			[]any{layers}},
		{"job_resource", `SELECT 1 FROM job_resource WHERE pk_job = ANY($1) ORDER BY pk_job_resource FOR UPDATE`,
			[]any{jobs}},
		{"folder_resource", `SELECT 1 FROM folder_resource WHERE pk_folder = ANY($1) ORDER BY pk_folder_resource FOR UPDATE`,
			[]any{folders}},
		{"point", `SELECT 1 FROM point p JOIN show sh ON sh.pk_show = p.pk_show AND sh.b_scheduler_managed
			JOIN unnest($1::text[], $2::text[]) k(show, dept) ON p.pk_show = k.show AND p.pk_dept = k.dept
			ORDER BY p.pk_point FOR UPDATE OF p`, []any{ptShows, ptDepts}},
	} {
		if _, err := tx.Exec(ctx, lock.sql, lock.args...); err != nil {
			return fmt.Errorf("recompute counters: lock %s: %w", lock.name, err)
		}
	}
	for _, upd := range []struct {
		name string
		sql  string
		args []any
	}{
		{"subscription", `UPDATE subscription s SET int_cores = coalesce(u.cores, 0), int_gpus = coalesce(u.gpus, 0)
			FROM unnest($1::text[], $2::text[]) k(show, alloc)
			JOIN show sh ON sh.pk_show = k.show AND sh.b_scheduler_managed
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN host h ON h.pk_host = p.pk_host
			                    WHERE p.pk_show = k.show AND h.pk_alloc = k.alloc) u ON true
			WHERE s.pk_show = k.show AND s.pk_alloc = k.alloc
			  AND (s.int_cores, s.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`,
			[]any{subShows, subAllocs}},
		{"layer_resource", `UPDATE layer_resource r SET int_cores = coalesce(u.cores, 0), int_gpus = coalesce(u.gpus, 0)
			FROM layer l JOIN job j ON j.pk_job = l.pk_job JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
			LEFT JOIN LATERAL (SELECT sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
			                     FROM proc WHERE pk_layer = l.pk_layer) u ON true
			WHERE l.pk_layer = ANY($1) AND r.pk_layer = l.pk_layer
			  AND (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`,
			[]any{layers}},
		{"job_resource", `UPDATE job_resource r SET int_cores = coalesce(u.cores, 0), int_gpus = coalesce(u.gpus, 0)
			FROM job j JOIN show sh ON sh.pk_show = j.pk_show AND sh.b_scheduler_managed
			LEFT JOIN LATERAL (SELECT sum(int_cores_reserved) AS cores, sum(int_gpus_reserved) AS gpus
			                     FROM proc WHERE pk_job = j.pk_job) u ON true
			WHERE j.pk_job = ANY($1) AND r.pk_job = j.pk_job
			  AND (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`,
			[]any{jobs}},
		{"folder_resource", `UPDATE folder_resource r SET int_cores = coalesce(u.cores, 0), int_gpus = coalesce(u.gpus, 0)
			FROM folder f JOIN show sh ON sh.pk_show = f.pk_show AND sh.b_scheduler_managed
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN job j ON j.pk_job = p.pk_job WHERE j.pk_folder = f.pk_folder) u ON true
			WHERE f.pk_folder = ANY($1) AND r.pk_folder = f.pk_folder
			  AND (r.int_cores, r.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`,
			[]any{folders}},
		{"point", `UPDATE point pt SET int_cores = coalesce(u.cores, 0), int_gpus = coalesce(u.gpus, 0)
			FROM unnest($1::text[], $2::text[]) k(show, dept)
			JOIN show sh ON sh.pk_show = k.show AND sh.b_scheduler_managed
			LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
			                     FROM proc p JOIN job j ON j.pk_job = p.pk_job
			                    WHERE p.pk_show = k.show AND j.pk_dept = k.dept) u ON true
			WHERE pt.pk_show = k.show AND pt.pk_dept = k.dept
			  AND (pt.int_cores, pt.int_gpus) IS DISTINCT FROM (coalesce(u.cores, 0), coalesce(u.gpus, 0))`,
			[]any{ptShows, ptDepts}},
	} {
		if _, err := tx.Exec(ctx, upd.sql, upd.args...); err != nil {
			return fmt.Errorf("recompute counters: %s: %w", upd.name, err)
		}
	}
	return nil
}

// RecomputeShows recomputes every counter row of the given managed shows,
// for an instance that starts or takes a cluster over: releases that happened
// while no stream ran left them high.
func RecomputeShows(ctx context.Context, tx pgx.Tx, shows []string) error {
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
		return fmt.Errorf("recompute counters of shows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var show, alloc, layer, job, folder, dept string
		if err := rows.Scan(&show, &alloc, &layer, &job, &folder, &dept); err != nil {
			return fmt.Errorf("recompute counters of shows: %w", err)
		}
		r.add(show, alloc, layer, job, folder, dept)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recompute counters of shows: %w", err)
	}
	return Recompute(ctx, tx, r)
}
