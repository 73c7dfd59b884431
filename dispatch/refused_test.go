package dispatch

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// A host running three 2-core frames moves to an allocation where the show's
// burst is 4 cores: Cuebot's guard refuses raising that subscription to its
// sum (6 cores). While it is refused, nothing more books against it, though
// its counter row alone (left where it was, at 0) would let 4 cores through.
func TestBookNothingAgainstRefusedCounterRow(t *testing.T) {
	f := smallFarm(1, 1600, 1, 1, 6, 200)
	f.Allocations = append(f.Allocations, seed.Allocation{Name: "local.oth", Tag: "oth"})
	f.Shows[0].Subscriptions = append(f.Shows[0].Subscriptions, seed.Subscription{Alloc: "local.oth", Size: 400, Burst: 400})
	db := loadFarm(t, f)
	ctx := ctxFor(t, time.Minute)
	job, host := db.s.Jobs["job00"], db.s.Hosts[seed.LoopbackName(0)]
	sim := &cuebotsim.Sim{Pool: db.Pool}
	for _, fr := range []string{"0001-l0", "0002-l0", "0003-l0"} {
		if _, err := sim.Book(ctx, job.Frames[fr], host, 200, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, db.s.Allocs["local.oth"], host); err != nil {
		t.Fatal(err)
	}
	var refused []counters.Refusal
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		refused, err = counters.RecomputeShows(ctx, tx, []string{db.s.Shows["film"]})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(refused) != 1 || refused[0].Table != "subscription" {
		t.Fatalf("refused %+v, want the local.oth subscription", refused)
	}

	ps := firstFit(readView(ctx, t, db.Pool), nil)
	if len(ps) != 3 || ps[0].Host.Alloc != db.s.Allocs["local.oth"] {
		t.Fatalf("placements %+v, want the 3 waiting frames on the moved host", ps)
	}
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps[:1])
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != 0 || len(res.Dropped) != 1 || res.Dropped[0].Reason != DropBurst {
		t.Fatalf("booked %d, dropped %+v: want the placement dropped for the burst", len(res.Booked), res.Dropped)
	}
	// The move itself put the show above its burst there; the only counter
	// off its sum is the refused one.
	vs, err := audit.Run(ctx, db.Pool, audit.Options{SkipCaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Check != "counter-subscription" || vs[0].Key != refused[0].Key {
		t.Fatalf("audit: %s, want only the refused subscription %s", audit.Summary(vs), refused[0].Key)
	}
}

// A booking released by the launcher (its host refused the launch) after
// its host moved to an allocation where the show is above its burst: the
// release recomputes that subscription, which Cuebot's guard refuses. The
// release still commits (the row is held at its burst), instead of failing
// and being retried for ever.
func TestReleaseBesideRefusedCounterRow(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	f := smallFarm(1, 1600, 1, 1, 3, 200)
	f.Allocations = append(f.Allocations, seed.Allocation{Name: "local.oth", Tag: "oth"})
	f.Shows[0].Subscriptions = append(f.Shows[0].Subscriptions, seed.Subscription{Alloc: "local.oth", Size: 200, Burst: 200})
	db := loadFarm(t, f)
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	rqd := newRQD(t, port, 5*time.Second)

	// Booked by an instance that crashed before launching.
	crashed := NewLauncher(LauncherConfig{Pool: db.Pool, RQD: rqd, Logger: quiet})
	b := newTestBooker(db.Pool, BookerConfig{Launcher: crashed})
	res, err := b.Book(ctx, testCluster, firstFit(readView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 3 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	refused := res.Booked[0]
	farm.Server(refused.HostName+":"+itoa(port)).Script(refused.Frame.ID, fakerqd.Reply{Action: fakerqd.Refuse})
	if _, err := db.Pool.Exec(ctx, `UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`,
		db.s.Allocs["local.oth"], refused.Host.ID); err != nil {
		t.Fatal(err)
	}

	settled := newSettledLog()
	next := runLauncher(t, LauncherConfig{Pool: db.Pool, RQD: rqd, OnSettled: settled.add})
	if n, err := next.Resolve(ctx, []int32{testCluster.ID}); err != nil || n != 3 {
		t.Fatalf("resolved %d: %v", n, err)
	}
	for _, s := range settled.wait(ctx, t, 3) {
		want := SettledLaunched
		if s.ProcID == refused.ProcID {
			want = SettledReleased
		}
		if s.Result != want {
			t.Errorf("proc %s settled %+v, want %s", s.ProcID, s, want)
		}
	}
	// Two 2-core frames run on the moved host, where the burst is 2 cores:
	// the subscription there is held at its burst. The one the host left is
	// high until the host cache recomputes it (the move marks it there);
	// every other counter is at its sum.
	vs, err := audit.Run(ctx, db.Pool, audit.Options{SkipCaps: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Check != "counter-subscription" {
			t.Errorf("audit: %s", v)
		}
	}
	var cores int64
	if err := db.Pool.QueryRow(ctx, `SELECT int_cores FROM subscription WHERE pk_alloc = $1`, db.s.Allocs["local.oth"]).
		Scan(&cores); err != nil || cores != 200 {
		t.Errorf("refused subscription holds %d cores (%v), want its burst 200", cores, err)
	}
}
