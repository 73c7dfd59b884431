package counters_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// TestCountersWithPolling: fed by a polling replica, as a role without
// REPLICATION, the writer recomputes every managed show after the first
// load, then only the released proc's counter rows, not whole shows. A proc
// booked and released between two polls, which no poll saw, has its counter
// rows brought back too.
func TestCountersWithPolling(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := &cuebotsim.Sim{Pool: db.Pool}
	job := s.Jobs["job-a"]
	host, other := s.Hosts[seed.LoopbackName(0)], s.Hosts[seed.LoopbackName(1)]
	bookFrames(t, sim, []string{host}, []string{job.Frames["0001-render"], job.Frames["0002-render"]})

	dsn := pgtest.PlainRole(t, db, "cuesched_poll")
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var mu sync.Mutex
	var batches []counters.Batch
	var gating atomic.Bool
	parked, gate := make(chan struct{}), make(chan struct{})
	var park sync.Once
	h := newHarness(t, db, func(rc *cache.ReplicaConfig, wc *counters.WriterConfig) {
		rc.DSN, rc.Pool, wc.Pool = dsn, pool, pool
		rc.Feed, rc.PollEvery = "poll", 100*time.Millisecond
	})
	batchHook := func(b counters.Batch) {
		if b.Err == nil {
			mu.Lock()
			batches = append(batches, b)
			mu.Unlock()
		}
	}
	h.batchHook.Store(&batchHook)
	replicaHook := func(e cache.ReplicaEvent) {
		if e.Kind == cache.EventLoading && gating.Load() {
			// Hold a poll before it takes its snapshot.
			park.Do(func() { close(parked); <-gate })
		}
	}
	h.replicaHook.Store(&replicaHook)
	h.start()
	before, _ := h.r.Hosts().Host(host)
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	mu.Lock()
	if len(batches) == 0 || batches[0].Shows == 0 {
		t.Errorf("the first load recomputed no managed show: %+v", batches)
	}
	batches = nil
	mu.Unlock()

	ctx := context.Background()
	if err := sim.Succeed(ctx, job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.waitUntil("the release's capacity seen", func() bool {
		hst, _ := h.r.Hosts().Host(host)
		return hst.Idle.Cores > before.Idle.Cores
	})
	// The poll that saw it has reported the release once it is done.
	n := h.loads.Load()
	h.waitUntil("one more poll", func() bool { return h.loads.Load() > n })
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	mu.Lock()
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
	if _, err := sim.Book(ctx, job.Frames["0003-render"], other, 100, seed.GB, 0, 0); err != nil {
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
