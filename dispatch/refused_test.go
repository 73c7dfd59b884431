package dispatch

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// A host running three 2-core frames moves to an allocation where the show's
// burst is 4 cores: Cuebot's guard refuses raising that subscription to its
// sum (6 cores). While it is refused, nothing more books against it, though
// its counter row alone (left where it was, at 0) would let 4 cores through.
func TestBookNothingAgainstRefusedCounterRow(t *testing.T) {
	t.Parallel()
	f := booktest.SmallFarm(1, 1600, 1, 1, 6, 200)
	f.Allocations = append(f.Allocations, seed.Allocation{Name: "local.oth", Tag: "oth"})
	f.Shows[0].Subscriptions = append(f.Shows[0].Subscriptions, seed.Subscription{Alloc: "local.oth", Size: 400, Burst: 400})
	db := booktest.LoadFarm(t, f)
	ctx := ctxFor(t, time.Minute)
	job, host := db.Seeded.Jobs["job00"], db.Seeded.Hosts[seed.LoopbackName(0)]
	sim := &cuebotsim.Sim{Pool: db.Pool}
	for _, fr := range []string{"0001-l0", "0002-l0", "0003-l0"} {
		if _, err := sim.Book(ctx, job.Frames[fr], host, 200, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, db.Seeded.Allocs["local.oth"], host); err != nil {
		t.Fatal(err)
	}
	var refused []counters.Refusal
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var err error
		refused, err = counters.RecomputeShows(ctx, tx, []string{db.Seeded.Shows["film"]})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(refused) != 1 || refused[0].Table != "subscription" {
		t.Fatalf("refused %+v, want the local.oth subscription", refused)
	}

	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	if len(ps) != 3 || ps[0].Host.Alloc != db.Seeded.Allocs["local.oth"] {
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
