package counters_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// The writer fed by a replica's change stream. These tests create
// replication slots: they do not run in parallel.

// TestCountersAfterCuebotReleases: Cuebot releases procs of a managed show
// in its two transactions and leaves the counters high; the replica sees
// the deletes in the stream and the writer brings the counters back to
// SUM(proc). The same for releases made while no replica ran, at its next
// start.
func TestCountersAfterCuebotReleases(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := &cuebotsim.Sim{Pool: db.Pool}
	job := s.Jobs["job-a"]
	var hosts []string
	for i := range 6 {
		hosts = append(hosts, s.Hosts[seed.LoopbackName(i)])
	}
	var frames []string
	for _, name := range slices.Sorted(maps.Keys(job.Frames)) {
		if !strings.HasSuffix(name, "-comp") { // comp's limit allows two
			frames = append(frames, job.Frames[name])
		}
	}
	bookFrames(t, sim, hosts, frames[:10])

	h := newHarness(t, db, nil).start()
	h.countersSettled()
	audittest.Clean(t, db.Pool)

	ctx := context.Background()
	for _, f := range frames[:4] {
		if err := sim.Succeed(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.Retry(ctx, frames[4]); err != nil {
		t.Fatal(err)
	}
	h.sync()
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	if h.batches.Load() < 2 {
		t.Fatalf("%d counter batches, want the start's and at least one for the releases", h.batches.Load())
	}
	h.stop()

	// Released while no replica runs: the counters stay high...
	for _, f := range frames[5:8] {
		if err := sim.Succeed(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if counterViolations(t, db) == 0 {
		t.Fatal("the audit found the counters right before any recompute: the test proves nothing")
	}
	// ...until the next start recomputes every managed show.
	h2 := newHarness(t, db, nil).start()
	h2.countersSettled()
	audittest.Clean(t, db.Pool)
}

// TestCountersLeftToCuebot: with Counters "cuebot", Cuebot lowers them
// itself, the replica reports nothing and no writer runs.
func TestCountersLeftToCuebot(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := &cuebotsim.Sim{Pool: db.Pool, Counters: cuebotsim.CuebotCounters}
	job := s.Jobs["job-a"]
	host := s.Hosts[seed.LoopbackName(0)]
	bookFrames(t, sim, []string{host}, []string{job.Frames["0001-render"], job.Frames["0002-render"]})
	h := newHarness(t, db, func(c *cache.ReplicaConfig, _ *counters.WriterConfig) { c.OnCounters = nil }).start()
	if err := sim.Succeed(context.Background(), job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.sync()
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	if n := h.batches.Load(); n != 0 {
		t.Fatalf("%d counter batches with Counters cuebot", n)
	}
}

// TestCounterRowRefusedByGuard: a host running four frames of a managed show
// moves to cloud.general, where the show's burst (200) is below what they
// hold. The subscription's recompute is refused by Cuebot's guard: it blocks
// no other row, is reported (Writer.Refused, the gauge), is not retried
// until its rows change, and is recomputed once the burst is raised.
func TestCounterRowRefusedByGuard(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := &cuebotsim.Sim{Pool: db.Pool}
	ctx := context.Background()
	job, alpha, cloud := s.Jobs["job-a"], s.Shows["alpha"], s.Allocs["cloud.general"]
	moved, other := s.Hosts[seed.LoopbackName(0)], s.Hosts[seed.LoopbackName(1)]
	bookFrames(t, sim, []string{moved}, []string{job.Frames["0001-render"], job.Frames["0002-render"],
		job.Frames["0003-render"], job.Frames["0004-render"]})
	bookFrames(t, sim, []string{other}, []string{job.Frames["0001-lit"]})
	h := newHarness(t, db, nil).start()
	h.countersSettled()
	audittest.Clean(t, db.Pool)

	h.exec(`UPDATE subscription SET int_burst = 200 WHERE pk_show = $1 AND pk_alloc = $2`, alpha, cloud)
	h.exec(`UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, cloud, moved)
	// A release on the moved host marks the cloud.general subscription (300
	// cores left there); one on the other host marks rows it must not block.
	for _, f := range []string{job.Frames["0001-render"], job.Frames["0001-lit"]} {
		if err := sim.Succeed(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	h.sync()
	h.countersSettled() // settled: the refused row is not queued again
	refused := h.w.Refused()
	if len(refused) != 1 || refused[0].Table != "subscription" ||
		refused[0].Row != (counters.Proc{Show: alpha, Alloc: cloud}) {
		t.Fatalf("refused %+v, want alpha's cloud.general subscription", refused)
	}
	if got := h.refusedGauge(); got != 1 {
		t.Errorf("gauge of refused counter rows %v, want 1", got)
	}
	vs, err := audit.Run(ctx, db.Pool, audit.Options{SkipCaps: true}) // the move broke the burst, not us
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Check != "counter-subscription" || vs[0].Key != refused[0].Key {
		t.Fatalf("audit: %s, want only the refused subscription %s", audit.Summary(vs), refused[0].Key)
	}
	// Matching's usage comes from the procs: it sees the show beyond its
	// burst there and places nothing.
	if sub, ok := h.r.Usage().Subscription(alpha, cloud); !ok || sub.Cores <= sub.Burst {
		t.Errorf("matching sees %+v (%v), want the subscription beyond its burst", sub, ok)
	}

	// Retried when its rows change: the host moved back...
	brought := func(what string) {
		t.Helper()
		h.sync()
		h.waitUntil(what, func() bool { return len(h.w.Refused()) == 0 })
		h.countersSettled()
		if got := h.refusedGauge(); got != 0 {
			t.Errorf("gauge of refused counter rows %v, want 0", got)
		}
		audittest.Clean(t, db.Pool)
	}
	h.exec(`UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, s.Allocs["local.general"], moved)
	brought("the refused row is recomputed after the host moved back")
	// ...or the burst raised.
	h.exec(`UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, cloud, moved)
	h.sync()
	h.waitUntil("the row is refused again", func() bool { return len(h.w.Refused()) == 1 })
	h.exec(`UPDATE subscription SET int_burst = 1000 WHERE pk_show = $1 AND pk_alloc = $2`, alpha, cloud)
	brought("the refused row is recomputed after the burst was raised")
}
