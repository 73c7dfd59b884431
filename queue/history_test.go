package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/queue"
)

// Frames brings each layer's history (memory from history): its finished
// frames from layer_stat, the most a frame used from layer_mem, and, for a
// layer of a show booked from history with enough frames finished, whether
// a frame was killed for its memory (exit status 33).
func TestFramesReadTheLayersHistory(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	k := launch(t, s, job("hist", seed.Layer{Name: "render", Frames: 8, Cores: 100, Mem: 30 * seed.GB, Tags: "general"}))
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	// Four frames succeed (Cuebot's trigger counts them in layer_stat) and
	// the layer's frames used at most 10 GB.
	exec(`UPDATE frame SET str_state = 'SUCCEEDED', int_exit_status = 0 WHERE pk_frame IN (
		SELECT pk_frame FROM frame WHERE pk_layer = $1 ORDER BY int_dispatch_order, int_layer_order LIMIT 4)`, k.Layers["render"])
	exec(`UPDATE layer_mem SET int_max_rss = $2 WHERE pk_layer = $1`, k.Layers["render"], 10*seed.GB)
	q := queue.New(db.Pool, nil)
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	l, ok := q.Layer(k.Layers["render"])
	if !ok {
		t.Fatal("the layer was not queued")
	}
	read := func(shows ...string) match.History {
		t.Helper()
		q.MemoryShows = shows
		if err := q.Frames(ctx, []*match.Layer{l}, 0); err != nil {
			t.Fatal(err)
		}
		if len(l.Frames) != 4 {
			t.Fatalf("%d waiting frames read, want 4", len(l.Frames))
		}
		return l.History
	}
	want := match.History{Finished: 4, MaxRSS: 10 * seed.GB}
	if h := read("managed"); h != want {
		t.Fatalf("history %+v, want %+v", h, want)
	}
	// A frame killed for its memory, back to WAITING as Cuebot retries it.
	exec(`UPDATE frame SET int_exit_status = 33 WHERE pk_frame = (
		SELECT pk_frame FROM frame WHERE pk_layer = $1 AND str_state = 'WAITING' LIMIT 1)`, k.Layers["render"])
	want.MemFailed = true
	for _, shows := range [][]string{{"managed"}, {"other", "*"}} {
		if h := read(shows...); h != want {
			t.Errorf("shows %q: history %+v, want %+v", shows, h, want)
		}
	}
	// Not looked for where it could not matter: another show, or the
	// setting off.
	want.MemFailed = false
	for _, shows := range [][]string{{"other"}, nil} {
		if h := read(shows...); h != want {
			t.Errorf("shows %q: history %+v, want %+v", shows, h, want)
		}
	}
}

// Frames brings the mean run of the layer's and its job's finished frames
// (reservations), from Cuebot's layer_usage and job_usage; none finished
// reads 0.
func TestFramesReadTheRuns(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	k := launch(t, s, job("runs", seed.Layer{Name: "render", Frames: 4, Cores: 100, Mem: seed.GB, Tags: "general"},
		seed.Layer{Name: "comp", Frames: 2, Cores: 100, Mem: seed.GB, Tags: "general"}))
	q := queue.New(db.Pool, nil)
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	read := func() (render, comp match.Runs) {
		t.Helper()
		var ls []*match.Layer
		for _, name := range []string{"render", "comp"} {
			l, ok := q.Layer(k.Layers[name])
			if !ok {
				t.Fatalf("layer %s was not queued", name)
			}
			ls = append(ls, l)
		}
		if err := q.Frames(ctx, ls, 0); err != nil {
			t.Fatal(err)
		}
		return ls[0].Runs, ls[1].Runs
	}
	if r, c := read(); r != (match.Runs{}) || c != (match.Runs{}) {
		t.Fatalf("runs %+v and %+v before any frame finished, want none", r, c)
	}
	// Cuebot adds each success's clock seconds as frames complete: three of
	// render's frames ran 3,000 s in all, and the job's five 6,000 s.
	if _, err := db.Pool.Exec(ctx, `UPDATE layer_usage SET int_clock_time_success = 3000, int_frame_success_count = 3
		WHERE pk_layer = $1`, k.Layers["render"]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO job_usage (pk_job_usage, pk_job, int_clock_time_success, int_frame_success_count)
		VALUES ($1, $1, 6000, 5)
		ON CONFLICT (pk_job) DO UPDATE SET int_clock_time_success = 6000, int_frame_success_count = 5`, k.ID); err != nil {
		t.Fatal(err)
	}
	r, c := read()
	if want := (match.Runs{Layer: 1000 * time.Second, Job: 1200 * time.Second}); r != want {
		t.Errorf("render's runs %+v, want %+v", r, want)
	}
	if want := (match.Runs{Job: 1200 * time.Second}); c != want {
		t.Errorf("comp's runs %+v, want %+v", c, want)
	}
}
