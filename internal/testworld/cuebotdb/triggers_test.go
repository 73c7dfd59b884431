package cuebotdb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// smallFarm is one managed show on local.general with two hosts and one job
// of a plain layer and a layer whose frames wait on a depend.
func smallFarm(t *testing.T) (*pgtest.DB, *seed.Seeded) {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	f := &seed.Farm{
		Hosts: []seed.Host{
			{Name: "h1", Alloc: "local.general", Cores: 800, Mem: 16 * seed.GB},
			{Name: "h2", Alloc: "local.general", Cores: 1600, Mem: 32 * seed.GB},
		},
		Shows: []seed.Show{{Name: "pipe", Managed: true,
			Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 1000, Burst: 2000}}}},
		Jobs: []seed.Job{{Name: "pipe-job", Show: "pipe", Layers: []seed.Layer{
			{Name: "render", Frames: 10, Cores: 100, Mem: seed.GB},
			{Name: "comp", Frames: 4, Cores: 100, Mem: seed.GB, Depend: true},
		}}},
	}
	s, err := seed.Load(t.Context(), db.Pool, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

type counts struct{ total, waiting, depend, running, succeeded int64 }

func layerCounts(t *testing.T, db *pgtest.DB, layer string) counts {
	t.Helper()
	var c counts
	if err := db.Pool.QueryRow(t.Context(), `SELECT int_total_count, int_waiting_count, int_depend_count,
		int_running_count, int_succeeded_count FROM layer_stat WHERE pk_layer = $1`, layer).
		Scan(&c.total, &c.waiting, &c.depend, &c.running, &c.succeeded); err != nil {
		t.Fatal(err)
	}
	return c
}

func jobCounts(t *testing.T, db *pgtest.DB, job string) counts {
	t.Helper()
	var c counts
	if err := db.Pool.QueryRow(t.Context(), `SELECT j.int_frame_count, s.int_waiting_count, s.int_depend_count,
		s.int_running_count, s.int_succeeded_count FROM job_stat s JOIN job j USING (pk_job) WHERE pk_job = $1`, job).
		Scan(&c.total, &c.waiting, &c.depend, &c.running, &c.succeeded); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLaunchSetsCounts(t *testing.T) {
	db, s := smallFarm(t)
	job := s.Jobs["pipe-job"]
	if got, want := layerCounts(t, db, job.Layers["render"]), (counts{total: 10, waiting: 10}); got != want {
		t.Errorf("render layer_stat %+v, want %+v", got, want)
	}
	if got, want := layerCounts(t, db, job.Layers["comp"]), (counts{total: 4, depend: 4}); got != want {
		t.Errorf("comp layer_stat %+v, want %+v", got, want)
	}
	if got, want := jobCounts(t, db, job.ID), (counts{total: 14, waiting: 10, depend: 4}); got != want {
		t.Errorf("job_stat %+v, want %+v", got, want)
	}
	var state string
	var layers int
	if err := db.Pool.QueryRow(t.Context(), `SELECT str_state, int_layer_count FROM job WHERE pk_job = $1`, job.ID).
		Scan(&state, &layers); err != nil {
		t.Fatal(err)
	}
	if state != "PENDING" || layers != 2 {
		t.Errorf("job state %s with %d layers, want PENDING with 2", state, layers)
	}
	// Every companion row a trigger creates exists, keyed by its parent.
	for _, table := range []string{"job_stat", "job_resource", "job_usage", "job_mem", "job_history"} {
		var n int
		if err := db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table+" WHERE pk_job = $1", job.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s has %d rows for the job, want 1", table, n)
		}
	}
	var eligible int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame WHERE pk_job = $1 AND str_state = 'WAITING'
		AND ts_eligible IS NOT NULL`, job.ID).Scan(&eligible); err != nil {
		t.Fatal(err)
	}
	if eligible != 10 {
		t.Errorf("%d WAITING frames have ts_eligible, want 10", eligible)
	}
}

func TestRunningMovesCountsAndOpensHistory(t *testing.T) {
	db, s := smallFarm(t)
	job := s.Jobs["pipe-job"]
	frame := job.Frames["0001-render"]
	sim := &cuebotsim.Sim{Pool: db.Pool}
	if _, err := sim.Book(t.Context(), frame, s.Hosts["h1"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := layerCounts(t, db, job.Layers["render"]), (counts{total: 10, waiting: 9, running: 1}); got != want {
		t.Errorf("layer_stat after start %+v, want %+v", got, want)
	}
	if got, want := jobCounts(t, db, job.ID), (counts{total: 14, waiting: 9, depend: 4, running: 1}); got != want {
		t.Errorf("job_stat after start %+v, want %+v", got, want)
	}
	var host, alloc string
	var stopped int
	if err := db.Pool.QueryRow(t.Context(), `SELECT str_host, pk_alloc, int_ts_stopped FROM frame_history WHERE pk_frame = $1`,
		frame).Scan(&host, &alloc, &stopped); err != nil {
		t.Fatalf("frame_history row: %v", err)
	}
	if host != "h1" || alloc != s.Allocs["local.general"] || stopped != 0 {
		t.Errorf("frame_history host %s alloc %s stopped %d, want h1 %s 0", host, alloc, stopped, s.Allocs["local.general"])
	}
	var started *time.Time
	if err := db.Pool.QueryRow(t.Context(), `SELECT ts_started FROM layer_stat WHERE pk_layer = $1`,
		job.Layers["render"]).Scan(&started); err != nil || started == nil {
		t.Errorf("layer_stat.ts_started not stamped (%v)", err)
	}

	if err := sim.Succeed(t.Context(), frame); err != nil {
		t.Fatal(err)
	}
	if got, want := layerCounts(t, db, job.Layers["render"]), (counts{total: 10, waiting: 9, succeeded: 1}); got != want {
		t.Errorf("layer_stat after success %+v, want %+v", got, want)
	}
	if err := db.Pool.QueryRow(t.Context(), `SELECT int_ts_stopped FROM frame_history WHERE pk_frame = $1`, frame).
		Scan(&stopped); err != nil || stopped == 0 {
		t.Errorf("frame_history not closed: stopped %d (%v)", stopped, err)
	}

	// A booking cleared with exit status 299 leaves no history.
	frame2 := job.Frames["0002-render"]
	if _, err := sim.Book(t.Context(), frame2, s.Hosts["h1"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := sim.Complete(t.Context(), frame2, "WAITING", 299); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame_history WHERE pk_frame = $1`, frame2).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d frame_history rows after a 299 release, want 0", n)
	}
}

func TestDependReleaseMakesWaiting(t *testing.T) {
	db, s := smallFarm(t)
	job := s.Jobs["pipe-job"]
	frame := job.Frames["0001-comp"]
	var before int32
	if err := db.Pool.QueryRow(t.Context(), `SELECT int_version FROM frame WHERE pk_frame = $1`, frame).Scan(&before); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.ReleaseDepends(t.Context(), job.Layers["comp"]); err != nil {
		t.Fatal(err)
	}
	var state string
	var version int32
	var eligible time.Time
	if err := db.Pool.QueryRow(t.Context(), `SELECT str_state, int_version, ts_eligible FROM frame WHERE pk_frame = $1`,
		frame).Scan(&state, &version, &eligible); err != nil {
		t.Fatal(err)
	}
	if state != "WAITING" || version != before+1 || eligible.Before(start.Add(-time.Second)) {
		t.Errorf("after depend release: %s version %d eligible %v, want WAITING version %d eligible after %v",
			state, version, eligible, before+1, start)
	}
	if got, want := layerCounts(t, db, job.Layers["comp"]), (counts{total: 4, waiting: 4}); got != want {
		t.Errorf("comp layer_stat %+v, want %+v", got, want)
	}
}

func TestGuardsRaise(t *testing.T) {
	db, s := smallFarm(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, sql, want string
		args            []any
	}{
		{"host idle cores below zero", `UPDATE host SET int_cores_idle = -100 WHERE pk_host = $1`,
			"unable to allocate additional core units", []any{s.Hosts["h1"]}},
		{"host idle memory below zero", `UPDATE host SET int_mem_idle = int_mem_idle - int_mem - 1 WHERE pk_host = $1`,
			"unable to allocate additional memory", []any{s.Hosts["h1"]}},
		{"subscription above burst", `UPDATE subscription SET int_cores = int_burst + 100 WHERE pk_show = $1`,
			"exceeded its burst", []any{s.Shows["pipe"]}},
		{"job above max cores", `UPDATE job_resource SET int_cores = int_max_cores + 1 WHERE pk_job = $1`,
			"exceeded max cores", []any{s.Jobs["pipe-job"].ID}},
		{"proc with no cores", `INSERT INTO proc (pk_proc, pk_host, int_cores_reserved, int_mem_reserved) VALUES ('p', $1, 0, 0)`,
			"tried to allocate 0 cores", []any{s.Hosts["h1"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.Pool.Exec(ctx, tc.sql, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Raising the burst and the cores together is allowed (the guard checks
	// only when the burst is unchanged).
	if _, err := db.Pool.Exec(ctx, `UPDATE subscription SET int_burst = 5000, int_cores = 3000 WHERE pk_show = $1`,
		s.Shows["pipe"]); err != nil {
		t.Fatalf("raising burst with cores: %v", err)
	}
}
