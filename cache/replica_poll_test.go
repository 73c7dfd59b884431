package cache

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// TestPollWithoutLogicalReplication: on a server with wal_level = replica,
// as a role without REPLICATION, a polling replica loads the hosts, sees a
// host's capacity freed by a Cuebot-style release at a following poll (and
// reports that host as grown, with no topology change), and recomputes only
// the released proc's counter rows, not whole shows. A proc booked and
// released between two polls, which no poll saw, has its counter rows
// brought back too.
func TestPollWithoutLogicalReplication(t *testing.T) {
	c := pgtest.NewCluster(t, pgcluster.Options{Settings: map[string]string{"wal_level": "replica"}})
	db := pgtest.NewDBIn(t, c)
	s := loadFarm(t, db, smallFarm())
	sim := newSim(db)
	job := s.Jobs["job-a"]
	host, other := s.Hosts[seed.LoopbackName(0)], s.Hosts[seed.LoopbackName(1)]
	bookFrames(t, db, sim, []string{host}, []string{job.Frames["0001-render"], job.Frames["0002-render"]})

	dsn := pgtest.PlainRole(t, db, "cuesched_poll")
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var mu sync.Mutex
	type wake struct {
		grown []string
		topo  bool
	}
	var wakes []wake
	var batches []ReplicaEvent
	var gating atomic.Bool
	parked, gate := make(chan struct{}), make(chan struct{})
	var park sync.Once
	h := newReplicaHarness(t, db, func(c *ReplicaConfig) {
		c.DSN, c.Pool = dsn, pool
		c.Feed, c.PollEvery = "poll", 100*time.Millisecond
		c.OnHosts = func(grown []match.Host, topo bool) {
			w := wake{topo: topo}
			for _, g := range grown {
				w.grown = append(w.grown, g.ID)
			}
			mu.Lock()
			wakes = append(wakes, w)
			mu.Unlock()
		}
	})
	h.failFast = true
	hook := func(e ReplicaEvent) {
		switch {
		case e.Kind == EventCounters && e.Err == nil:
			mu.Lock()
			batches = append(batches, e)
			mu.Unlock()
		case e.Kind == EventLoading && gating.Load():
			// Hold a poll before it takes its snapshot.
			park.Do(func() { close(parked); <-gate })
		}
	}
	h.hook.Store(&hook)
	h.start()
	if n := h.slots(); n != 0 {
		t.Fatalf("%d replication slots", n)
	}
	before, ok := h.r.Hosts().Host(host)
	if !ok || h.r.Hosts().Len() != 8 {
		t.Fatalf("host %s loaded: %v; %d hosts, want 8", host, ok, h.r.Hosts().Len())
	}
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	mu.Lock()
	if len(batches) == 0 || batches[0].Shows == 0 {
		t.Errorf("the first load recomputed no managed show: %+v", batches)
	}
	batches, wakes = nil, nil
	mu.Unlock()

	ctx := context.Background()
	if err := sim.Succeed(ctx, job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.waitUntil("the release's capacity seen", func() bool {
		hst, _ := h.r.Hosts().Host(host)
		return hst.Idle.Cores > before.Idle.Cores
	})
	// The poll that saw it has marked the counters once it is done.
	n := h.loads.Load()
	h.waitUntil("one more poll", func() bool { return h.loads.Load() > n })
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	mu.Lock()
	var grew bool
	for _, w := range wakes {
		if w.topo || len(w.grown) > 1 {
			t.Errorf("a poll reported grown hosts %v, topology %v: want only the released host", w.grown, w.topo)
		}
		grew = grew || slices.Contains(w.grown, host)
	}
	if !grew {
		t.Errorf("no poll reported host %s grown (wakes %+v)", host, wakes)
	}
	rows := 0
	for _, b := range batches {
		if b.Shows != 0 {
			t.Errorf("a poll recomputed %d whole shows after one release", b.Shows)
		}
		if b.Rows > 5 {
			t.Errorf("a batch recomputed %d counter rows after one release; its proc is counted in 5", b.Rows)
		}
		rows += b.Rows
	}
	if rows == 0 {
		t.Errorf("no counter row recomputed after the release")
	}
	mu.Unlock()

	// Booked and released while a poll waits before its snapshot: no poll
	// ever holds that proc.
	gating.Store(true)
	<-parked
	if _, err := sim.Book(ctx, job.Frames["0003-render"], other, 100, gb, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := sim.Succeed(ctx, job.Frames["0003-render"]); err != nil {
		t.Fatal(err)
	}
	seen := h.loads.Load()
	close(gate)
	h.waitUntil("a poll after the short-lived proc", func() bool { return h.loads.Load() > seen })
	h.countersSettled()
	audittest.Clean(t, db.Pool)
}
