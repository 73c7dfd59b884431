package counters_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// releasedFarm books four frames of a managed show and one of an unmanaged
// show (Cuebot's), then releases two managed ones Cuebot-style, leaving the
// managed show's counters high.
func releasedFarm(t *testing.T) (*pgtest.DB, *seed.Seeded, []cuebotsim.Proc) {
	t.Helper()
	db := pgtest.NewDB(t)
	f := &seed.Farm{
		Hosts: []seed.Host{{Name: "h1", Alloc: "local.general", Cores: 3200, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "m", Managed: true, Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 10000, Burst: 10000}}}},
		Jobs: []seed.Job{
			{Name: "mj", Show: "m", Layers: []seed.Layer{{Name: "a", Frames: 4, Cores: 100, Mem: seed.GB}}},
			{Name: "tj", Show: "testing", Layers: []seed.Layer{{Name: "a", Frames: 1, Cores: 100, Mem: seed.GB}}},
		},
	}
	s, err := seed.Load(t.Context(), db.Pool, f, 11)
	if err != nil {
		t.Fatal(err)
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	for _, fr := range []string{"0001-a", "0002-a", "0003-a", "0004-a"} {
		if _, err := sim.Book(t.Context(), s.Jobs["mj"].Frames[fr], s.Hosts["h1"], 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sim.Book(t.Context(), s.Jobs["tj"].Frames["0001-a"], s.Hosts["h1"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	var released []cuebotsim.Proc
	for _, fr := range []string{"0001-a", "0002-a"} {
		p, err := sim.ProcOfFrame(t.Context(), s.Jobs["mj"].Frames[fr])
		if err != nil {
			t.Fatal(err)
		}
		if err := sim.Complete(t.Context(), p.Frame, "SUCCEEDED", 0); err != nil {
			t.Fatal(err)
		}
		released = append(released, p)
	}
	vs, err := audit.Run(t.Context(), db.Pool, audit.Options{AllowUnmanaged: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 5 {
		t.Fatalf("after Cuebot-style releases want the 5 counters of the managed show high, got %s", audit.Summary(vs))
	}
	return db, s, released
}

func inTx(t *testing.T, db *pgtest.DB, fn func(pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(context.Background(), db.Pool, fn); err != nil {
		t.Fatal(err)
	}
}

func TestRecomputeReleasedProcs(t *testing.T) {
	t.Parallel()
	db, s, released := releasedFarm(t)
	var r counters.Rows
	for _, p := range released {
		var folder, dept string
		if err := db.Pool.QueryRow(t.Context(), `SELECT pk_folder, pk_dept FROM job WHERE pk_job = $1`, p.Job).
			Scan(&folder, &dept); err != nil {
			t.Fatal(err)
		}
		r.Add(counters.Proc{Show: p.Show, Alloc: s.Allocs["local.general"], Layer: p.Layer, Job: p.Job, Folder: folder, Dept: dept})
	}
	for range 2 { // idempotent
		inTx(t, db, func(tx pgx.Tx) error { _, err := counters.Recompute(t.Context(), tx, r); return err })
		audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
	}
	var cores int64
	if err := db.Pool.QueryRow(t.Context(), `SELECT int_cores FROM job_resource WHERE pk_job = $1`, s.Jobs["tj"].ID).
		Scan(&cores); err != nil || cores != 100 {
		t.Errorf("Cuebot's own show's counter changed: %d (%v)", cores, err)
	}
}

func TestRecomputeShows(t *testing.T) {
	t.Parallel()
	db, s, _ := releasedFarm(t)
	inTx(t, db, func(tx pgx.Tx) error {
		_, err := counters.RecomputeShows(t.Context(), tx, []string{s.Shows["m"]})
		return err
	})
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// movedHostFarm is releasedFarm with the host then moved to cloud.general,
// where the show's burst (100) is below what the host's two remaining procs
// hold (200): Cuebot's guard refuses raising that subscription to its sum.
func movedHostFarm(t *testing.T) (*pgtest.DB, *seed.Seeded) {
	t.Helper()
	db, s, _ := releasedFarm(t)
	if _, err := db.Pool.Exec(t.Context(), `INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst)
		VALUES ('sub-cloud', $1, $2, 100, 100)`, s.Allocs["cloud.general"], s.Shows["m"]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(t.Context(), `UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`,
		s.Allocs["cloud.general"], s.Hosts["h1"]); err != nil {
		t.Fatal(err)
	}
	return db, s
}

// TestRefusedRowBlocksNothing: the one subscription the guard refuses is
// reported and held at its burst; every other row is brought back.
func TestRefusedRowBlocksNothing(t *testing.T) {
	t.Parallel()
	db, s := movedHostFarm(t)
	var refused []counters.Refusal
	inTx(t, db, func(tx pgx.Tx) error {
		var err error
		refused, err = counters.RecomputeShows(t.Context(), tx, []string{s.Shows["m"]})
		return err
	})
	if len(refused) != 1 || refused[0].Table != "subscription" || refused[0].Key != "sub-cloud" ||
		refused[0].Row != (counters.Proc{Show: s.Shows["m"], Alloc: s.Allocs["cloud.general"]}) {
		t.Fatalf("refused %+v, want the cloud.general subscription", refused)
	}
	vs, err := audit.Run(t.Context(), db.Pool, audit.Options{AllowUnmanaged: true, SkipCaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Check != "counter-subscription" || vs[0].Key != "sub-cloud" {
		t.Fatalf("want only the refused subscription off its sum, got %s", audit.Summary(vs))
	}
	var cores int64
	if err := db.Pool.QueryRow(t.Context(), `SELECT int_cores FROM subscription WHERE pk_subscription = 'sub-cloud'`).
		Scan(&cores); err != nil || cores != 100 {
		t.Errorf("refused subscription holds %d cores (%v), want its burst 100: nothing more may book there", cores, err)
	}

	// Once the burst is raised, the row is brought back like any other.
	if _, err := db.Pool.Exec(t.Context(), `UPDATE subscription SET int_burst = 1000 WHERE pk_subscription = 'sub-cloud'`); err != nil {
		t.Fatal(err)
	}
	inTx(t, db, func(tx pgx.Tx) error {
		var err error
		refused, err = counters.RecomputeShows(t.Context(), tx, []string{s.Shows["m"]})
		return err
	})
	if len(refused) != 0 {
		t.Fatalf("refused %+v after the burst was raised", refused)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// A show handed back to Cuebot is no longer managed, so the recompute of
// managed shows leaves its rows alone; RecomputeReleased brings them back to
// their sums once more (what `cuesched show release` does), and touches no
// other show's rows.
func TestRecomputeReleasedShow(t *testing.T) {
	t.Parallel()
	db, s, _ := releasedFarm(t)
	if _, err := db.Pool.Exec(t.Context(), `UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1`, s.Shows["m"]); err != nil {
		t.Fatal(err)
	}
	jobCores := func(job string) int64 {
		t.Helper()
		var cores int64
		if err := db.Pool.QueryRow(t.Context(), `SELECT int_cores FROM job_resource WHERE pk_job = $1`, s.Jobs[job].ID).
			Scan(&cores); err != nil {
			t.Fatal(err)
		}
		return cores
	}
	inTx(t, db, func(tx pgx.Tx) error {
		_, err := counters.RecomputeShows(t.Context(), tx, []string{s.Shows["m"]})
		return err
	})
	if got := jobCores("mj"); got != 400 {
		t.Fatalf("the recompute of managed shows set a released show's job to %d cores, want it left at 400", got)
	}
	for range 2 { // idempotent
		inTx(t, db, func(tx pgx.Tx) error {
			_, err := counters.RecomputeReleased(t.Context(), tx, s.Shows["m"])
			return err
		})
	}
	if got := jobCores("tj"); got != 100 {
		t.Errorf("Cuebot's own show's job counter changed to %d", got)
	}
	// Managed again, the audit checks every counter of the show against its sum.
	if _, err := db.Pool.Exec(t.Context(), `UPDATE show SET b_scheduler_managed = true WHERE pk_show = $1`, s.Shows["m"]); err != nil {
		t.Fatal(err)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}
