package shows_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/shows"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNear(t *testing.T) {
	t.Parallel()
	names := []string{"film", "Film2", "pipeline", "testing", "fx", "commercial"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"flim", []string{"film"}},
		{"FILM", []string{"film", "Film2"}},
		{"pipe", []string{"pipeline"}},
		{"tseting", []string{"testing"}},
		{"zzzzzzzz", nil},
	} {
		if got := shows.Near(tc.name, names, 5); !slices.Equal(got, tc.want) {
			t.Errorf("Near(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := shows.Near("f", []string{"fa", "fb", "fc", "fd"}, 2); len(got) != 2 {
		t.Errorf("Near returned %d names, want at most 2", len(got))
	}
}

// handoverFarm: "film" managed, "legacy" Cuebot's, "old" inactive.
func handoverFarm() *seed.Farm {
	f := booktest.SmallFarm(2, 800, 1, 2, 4, 200)
	f.Shows = append(f.Shows, seed.Show{Name: "legacy"}, seed.Show{Name: "old", Inactive: true})
	return f
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestManageAndReleaseRefuseOrKeep(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, handoverFarm())
	ctx := ctxFor(t)

	var ue *shows.UnknownError
	if _, err := shows.Manage(ctx, db.Pool, "flim"); !errors.As(err, &ue) || !slices.Contains(ue.Near, "film") {
		t.Errorf("manage of an unknown show: %v, want an UnknownError naming film", err)
	}
	if _, err := shows.Release(ctx, db.Pool, "legasy", shows.ReleaseOptions{}); !errors.As(err, &ue) ||
		!slices.Equal(ue.Near, []string{"legacy"}) {
		t.Errorf("release of an unknown show: %v, want an UnknownError naming legacy", err)
	}
	if _, err := shows.Manage(ctx, db.Pool, "old"); !errors.Is(err, shows.ErrInactive) {
		t.Errorf("manage of an inactive show: %v, want ErrInactive", err)
	}
	if s, err := shows.Get(ctx, db.Pool, "old"); err != nil || s.Managed {
		t.Errorf("the inactive show after a refused manage: %+v %v", s, err)
	}

	m, err := shows.Manage(ctx, db.Pool, "legacy")
	if err != nil || m.Already || !m.Show.Managed {
		t.Fatalf("manage legacy: %+v %v", m, err)
	}
	m, err = shows.Manage(ctx, db.Pool, "legacy")
	if err != nil || !m.Already || !m.Show.Managed {
		t.Errorf("manage legacy again: %+v %v, want Already and no error", m, err)
	}
	r, err := shows.Release(ctx, db.Pool, "legacy", shows.ReleaseOptions{})
	if err != nil || r.Already || r.Show.Managed {
		t.Fatalf("release legacy: %+v %v", r, err)
	}
	r, err = shows.Release(ctx, db.Pool, "legacy", shows.ReleaseOptions{})
	if err != nil || !r.Already || r.Show.Managed {
		t.Errorf("release legacy again: %+v %v, want Already and no error", r, err)
	}

	all, err := shows.List(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
		if s.Name == "film" && (!s.Managed || !s.Active || s.Waiting != 8 || s.Running != 0 || s.Cuesched != 0) {
			t.Errorf("film listed as %+v, want managed, active, 8 waiting", s)
		}
	}
	if !slices.Equal(names, []string{"film", "legacy", "old", "testing"}) {
		t.Errorf("listed %q", names)
	}
}

// offSums lists the counter rows of a show (managed or not) whose cores or
// GPUs differ from the sums of their procs: the audit's counter checks, for
// one show whatever its flag.
func offSums(t *testing.T, db *pgtest.DB, show string) []string {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), `
		WITH p AS (SELECT p.pk_show, h.pk_alloc, p.pk_layer, p.pk_job, j.pk_folder, j.pk_dept,
		                  p.int_cores_reserved AS cores, p.int_gpus_reserved AS gpus
		             FROM proc p JOIN host h USING (pk_host) JOIN job j USING (pk_job))
		SELECT format('subscription %s: %s cores %s GPUs, procs %s %s', s.pk_alloc, s.int_cores, s.int_gpus, u.cores, u.gpus)
		  FROM subscription s, LATERAL (SELECT coalesce(sum(cores), 0) AS cores, coalesce(sum(gpus), 0) AS gpus
		                                  FROM p WHERE p.pk_show = s.pk_show AND p.pk_alloc = s.pk_alloc) u
		 WHERE s.pk_show = $1 AND (s.int_cores <> u.cores OR s.int_gpus <> u.gpus)
		UNION ALL
		SELECT format('layer %s: %s cores %s GPUs, procs %s %s', r.pk_layer, r.int_cores, r.int_gpus, u.cores, u.gpus)
		  FROM layer_resource r JOIN job j USING (pk_job),
		       LATERAL (SELECT coalesce(sum(cores), 0) AS cores, coalesce(sum(gpus), 0) AS gpus
		                  FROM p WHERE p.pk_layer = r.pk_layer) u
		 WHERE j.pk_show = $1 AND (r.int_cores <> u.cores OR r.int_gpus <> u.gpus)
		UNION ALL
		SELECT format('job %s: %s cores %s GPUs, procs %s %s', r.pk_job, r.int_cores, r.int_gpus, u.cores, u.gpus)
		  FROM job_resource r JOIN job j USING (pk_job),
		       LATERAL (SELECT coalesce(sum(cores), 0) AS cores, coalesce(sum(gpus), 0) AS gpus
		                  FROM p WHERE p.pk_job = r.pk_job) u
		 WHERE j.pk_show = $1 AND (r.int_cores <> u.cores OR r.int_gpus <> u.gpus)
		UNION ALL
		SELECT format('folder %s: %s cores %s GPUs, procs %s %s', r.pk_folder, r.int_cores, r.int_gpus, u.cores, u.gpus)
		  FROM folder_resource r JOIN folder f USING (pk_folder),
		       LATERAL (SELECT coalesce(sum(cores), 0) AS cores, coalesce(sum(gpus), 0) AS gpus
		                  FROM p WHERE p.pk_folder = r.pk_folder) u
		 WHERE f.pk_show = $1 AND (r.int_cores <> u.cores OR r.int_gpus <> u.gpus)
		UNION ALL
		SELECT format('point %s: %s cores %s GPUs, procs %s %s', pt.pk_dept, pt.int_cores, pt.int_gpus, u.cores, u.gpus)
		  FROM point pt, LATERAL (SELECT coalesce(sum(cores), 0) AS cores, coalesce(sum(gpus), 0) AS gpus
		                            FROM p WHERE p.pk_show = pt.pk_show AND p.pk_dept = pt.pk_dept) u
		 WHERE pt.pk_show = $1 AND (pt.int_cores <> u.cores OR pt.int_gpus <> u.gpus)`,
		show)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bookByCuesched books the first n waiting frames of the farm with
// cuesched's own booking transaction (a launch outbox row each; dry run:
// nothing is launched).
func bookByCuesched(t *testing.T, db *booktest.Seeded, n int) []dispatch.Booking {
	t.Helper()
	ctx := ctxFor(t)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	if len(ps) < n {
		t.Fatalf("%d placements, want %d", len(ps), n)
	}
	b := dispatch.NewBooker(dispatch.BookerConfig{Pool: db.Pool, DryRun: true, Logger: slog.New(slog.DiscardHandler)})
	res, err := b.Book(ctx, dispatch.Cluster{ID: 1, Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "local", Alloc: "gen"}}, ps[:n])
	if err != nil || len(res.Booked) != n {
		t.Fatalf("booked %d of %d: %v %v", len(res.Booked), n, res.Dropped, err)
	}
	return res.Booked
}

// The acceptance case: a show released while frames cuesched booked still
// run, with counters left high by releases no instance recomputed, is
// handed back with its counters at their sums; Cuebot then books and
// finishes its frames, lowering the counters itself, and they stay exact.
func TestReleaseWithFramesRunning(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, handoverFarm())
	ctx := ctxFor(t)
	booked := bookByCuesched(t, db, 6)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	// Two finish while the show is managed: Cuebot leaves their counters to
	// cuesched, and no instance runs to recompute them.
	for _, bk := range booked[:2] {
		if err := sim.Succeed(ctx, bk.Frame.ID); err != nil {
			t.Fatal(err)
		}
	}
	film := db.Seeded.Shows["film"]
	if off := offSums(t, db.DB, film); len(off) == 0 {
		t.Fatal("no counter is off its sum before the release: the test shows nothing")
	}

	r, err := shows.Release(ctx, db.Pool, "film", shows.ReleaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Already || r.Show.Managed || r.Show.Cuesched != 4 || r.Show.Running != 4 || r.Refused != 0 {
		t.Errorf("release: %+v, want film unmanaged with 4 frames running under cuesched", r)
	}
	if off := offSums(t, db.DB, film); len(off) != 0 {
		t.Errorf("after the release, counters off their sums: %q", off)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})

	// --wait: it sees the 4 frames, and returns once Cuebot has finished them.
	type waited struct {
		s   shows.Show
		err error
	}
	progress := make(chan int64, 16)
	done := make(chan waited, 1)
	go func() {
		s, err := shows.Wait(ctx, db.Pool, "film", 5*time.Millisecond, func(n int64) { progress <- n })
		close(progress)
		done <- waited{s, err}
	}()
	if n := <-progress; n != 4 {
		t.Fatalf("wait first saw %d frames under cuesched, want 4", n)
	}

	// Cuebot's now: it books one of the two waiting frames and finishes the
	// rest, each in transactions that move procs and counters together.
	var waiting string
	if err := db.Pool.QueryRow(ctx, `SELECT f.pk_frame FROM frame f JOIN job j USING (pk_job)
		WHERE j.pk_show = $1 AND f.str_state = 'WAITING' ORDER BY f.pk_frame LIMIT 1`, film).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if _, err := sim.Book(ctx, waiting, db.Seeded.Hosts[seed.LoopbackName(1)], 200, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, bk := range booked[2:] {
		if err := sim.Succeed(ctx, bk.Frame.ID); err != nil {
			t.Fatal(err)
		}
	}
	if off := offSums(t, db.DB, film); len(off) != 0 {
		t.Errorf("after Cuebot finished cuesched's frames, counters off their sums: %q", off)
	}
	w := <-done
	var last int64 = -1
	for n := range progress {
		last = n
	}
	if w.err != nil || w.s.Cuesched != 0 || last != 0 {
		t.Errorf("wait: %+v %v, last progress %d", w.s, w.err, last)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// A Cuebot release that read the show as managed before the flag flipped
// and deletes its proc after (lowering nothing) is waited for: the
// recompute runs after it, so the counters do not keep its proc.
func TestReleaseWaitsForACuebotReleaseInFlight(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, handoverFarm())
	ctx := ctxFor(t)
	cuebot := beginCuebotRelease(ctx, t, db)

	type result struct {
		r   shows.Released
		err error
	}
	done := make(chan result, 1)
	waiting := make(chan int, 1)
	go func() {
		r, err := shows.Release(ctx, db.Pool, "film", shows.ReleaseOptions{Waiting: func(n int) { waiting <- n }})
		done <- result{r, err}
	}()
	// Once the release waits, Cuebot finishes its release as it decided:
	// the host gets its resources back, the proc goes, no counter moves.
	select {
	case n := <-waiting:
		if n < 1 {
			t.Fatalf("the release waits for %d transactions, not for Cuebot's", n)
		}
	case res := <-done:
		t.Fatalf("the release returned without waiting for Cuebot's transaction: %+v %v", res.r, res.err)
	}
	cuebot.finish(ctx, t)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Waited < 1 || len(res.r.Lingering) != 0 || res.r.Show.Cuesched != 1 {
		t.Errorf("release: %+v, want it to have waited for Cuebot's transaction, one frame left under cuesched", res.r)
	}
	if off := offSums(t, db.DB, db.Seeded.Shows["film"]); len(off) != 0 {
		t.Errorf("counters off their sums after the release: %q", off)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// A transaction that read the show before the flip and outlives the wait is
// named (its pid); once it has ended, release again brings the counters it
// left back to their sums.
func TestReleaseAgainRepairsALingeringReader(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, handoverFarm())
	ctx := ctxFor(t)
	cuebot := beginCuebotRelease(ctx, t, db)
	r, err := shows.Release(ctx, db.Pool, "film", shows.ReleaseOptions{ReadersWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Lingering, []int32{cuebot.pid}) {
		t.Errorf("lingering %v, want Cuebot's pid %d", r.Lingering, cuebot.pid)
	}
	cuebot.finish(ctx, t)
	film := db.Seeded.Shows["film"]
	if off := offSums(t, db.DB, film); len(off) == 0 {
		t.Fatal("the lingering release left no counter off its sum: the test shows nothing")
	}
	r, err = shows.Release(ctx, db.Pool, "film", shows.ReleaseOptions{})
	if err != nil || !r.Already {
		t.Fatalf("release again: %+v %v", r, err)
	}
	if off := offSums(t, db.DB, film); len(off) != 0 {
		t.Errorf("after release again, counters off their sums: %q", off)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// cuebotRelease is Cuebot's release of a frame cuesched booked, by hand and
// in flight: its transaction has read the show as managed (so it will lower
// no counter) and not yet deleted the proc.
type cuebotRelease struct {
	tx  pgx.Tx
	p   cuebotsim.Proc
	pid int32 // its backend
}

// beginCuebotRelease books two frames of show film through cuesched, lets
// Cuebot finish one (a first release transaction), and begins Cuebot's
// second release, up to its read of the managed flag. The transaction rolls
// back at the test's end unless finish committed it.
func beginCuebotRelease(ctx context.Context, t *testing.T, db *booktest.Seeded) *cuebotRelease {
	t.Helper()
	booked := bookByCuesched(t, db, 2)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	p, err := sim.ProcOfFrame(ctx, booked[0].Frame.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.StopFrame(ctx, p.Frame, "SUCCEEDED", 0); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	pid := int32(conn.Conn().PgConn().PID())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(ctx)) })
	var managed bool
	if err := tx.QueryRow(ctx, `SELECT sh.b_scheduler_managed FROM proc p JOIN show sh USING (pk_show) WHERE p.pk_proc = $1`,
		p.ID).Scan(&managed); err != nil || !managed {
		t.Fatalf("Cuebot read managed %v (%v)", managed, err)
	}
	return &cuebotRelease{tx: tx, p: p, pid: pid}
}

// finish ends the release as Cuebot decided it: the host gets its
// resources back, the proc goes, no counter moves.
func (r *cuebotRelease) finish(ctx context.Context, t *testing.T) {
	t.Helper()
	if _, err := r.tx.Exec(ctx, `UPDATE host SET int_cores_idle = int_cores_idle + $2, int_mem_idle = int_mem_idle + $3
		WHERE pk_host = $1`, r.p.Host, r.p.Cores, r.p.Mem); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tx.Exec(ctx, `DELETE FROM proc WHERE pk_proc = $1`, r.p.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
