package launch

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// A booking released by the launcher (its host refused the launch) after
// its host moved to an allocation where the show is above its burst: the
// release recomputes that subscription, which Cuebot's guard refuses. The
// release still commits (the row is held at its burst), instead of failing
// and being retried for ever.
func TestReleaseBesideRefusedCounterRow(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	f := booktest.SmallFarm(1, 1600, 1, 1, 3, 200)
	f.Allocations = append(f.Allocations, seed.Allocation{Name: "local.oth", Tag: "oth"})
	f.Shows[0].Subscriptions = append(f.Shows[0].Subscriptions, seed.Subscription{Alloc: "local.oth", Size: 200, Burst: 200})
	db := booktest.LoadFarm(t, f)
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	rqd := newRQD(t, port, 5*time.Second)

	// Booked by an instance that crashed before launching.
	crashed := New(Config{Pool: db.Pool, RQD: rqd, Logger: quiet})
	b := newBooker(db.Pool, dispatch.BookerConfig{Launcher: crashed})
	res, err := b.Book(ctx, testCluster, booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 3 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	refused := res.Booked[0]
	farm.Server(refused.HostName+":"+itoa(port)).Script(refused.Frame.ID, fakerqd.Reply{Action: fakerqd.Refuse})
	if _, err := db.Pool.Exec(ctx, `UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`,
		db.Seeded.Allocs["local.oth"], refused.Host.ID); err != nil {
		t.Fatal(err)
	}

	settled := newSettledLog()
	next := runLauncher(t, Config{Pool: db.Pool, RQD: rqd, OnSettled: settled.add})
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
	if err := db.Pool.QueryRow(ctx, `SELECT int_cores FROM subscription WHERE pk_alloc = $1`, db.Seeded.Allocs["local.oth"]).
		Scan(&cores); err != nil || cores != 200 {
		t.Errorf("refused subscription holds %d cores (%v), want its burst 200", cores, err)
	}
}
