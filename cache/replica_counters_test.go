package cache

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// bookFrames books the job's frames Cuebot-style, round robin over the
// local hosts, and returns them in booking order.
func bookFrames(t *testing.T, db *pgtest.DB, sim *cuebotsim.Sim, hosts []string, frames []string) {
	t.Helper()
	for i, f := range frames {
		if _, err := sim.Book(context.Background(), f, hosts[i%len(hosts)], 100, gb, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func counterViolations(t *testing.T, db *pgtest.DB) int {
	t.Helper()
	vs, err := audit.Run(context.Background(), db.Pool, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return len(vs)
}

// TestCountersAfterCuebotReleases: Cuebot releases procs of a managed show
// in its two transactions and leaves the counters high; the replica sees
// the deletes in the stream and brings the counters back to SUM(proc). The
// same for releases made while no replica ran, at its next start.
func TestCountersAfterCuebotReleases(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := newSim(db)
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
	bookFrames(t, db, sim, hosts, frames[:10])

	h := newReplicaHarness(t, db, nil).start()
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
	if h.counterBatches.Load() < 2 {
		t.Fatalf("%d counter batches, want the start's and at least one for the releases", h.counterBatches.Load())
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
	h2 := newReplicaHarness(t, db, nil).start()
	h2.countersSettled()
	audittest.Clean(t, db.Pool)
}

// TestCountersLeftToCuebot: with Counters "cuebot", Cuebot lowers them
// itself and the replica recomputes nothing.
func TestCountersLeftToCuebot(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := &cuebotsim.Sim{Pool: db.Pool, Counters: cuebotsim.CuebotCounters}
	job := s.Jobs["job-a"]
	host := s.Hosts[seed.LoopbackName(0)]
	bookFrames(t, db, sim, []string{host}, []string{job.Frames["0001-render"], job.Frames["0002-render"]})
	h := newReplicaHarness(t, db, func(c *ReplicaConfig) { c.Counters = "cuebot" }).start()
	if err := sim.Succeed(context.Background(), job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.sync()
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	if n := h.counterBatches.Load(); n != 0 {
		t.Fatalf("%d counter batches with Counters cuebot", n)
	}
}

// TestLimitChangesReachMatching: a limit's max lowered and raised, and a
// layer newly linked to it, reach Caps without a restart, through the
// cuesched_limits notification (migration 0003) and cdc.Listener.
func TestLimitChangesReachMatching(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	h := newReplicaHarness(t, db, nil)
	l := cdc.NewListener(db.DSN, slog.New(slog.DiscardHandler))
	l.Handle(LimitsChannel, func(string) { h.r.LimitsChanged() })
	l.OnConnect(h.r.ReloadLimits)
	connected := l.Connected()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("listener did not stop")
		}
	})
	h.start()
	select {
	case <-connected:
	case <-time.After(60 * time.Second):
		t.Fatal("listener did not connect")
	}
	caps := h.r.Usage()
	lim, job := s.Limits["lic"], s.Jobs["job-a"]
	sim := newSim(db)
	bookFrames(t, db, sim, []string{s.Hosts[seed.LoopbackName(0)]}, []string{job.Frames["0001-comp"]})
	h.sync()
	if got, ok := caps.Limit(lim); !ok || got != (match.Limit{Running: 1, Max: 2}) {
		t.Fatalf("limit %+v %v, want 1 running of 2", got, ok)
	}
	limitIs := func(want match.Limit) func() bool {
		return func() bool { got, _ := caps.Limit(lim); return got == want }
	}
	h.exec(`UPDATE limit_record SET int_max_value = 1 WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the lowered max is seen", limitIs(match.Limit{Running: 1, Max: 1}))
	// A NULL max lets nothing run: Cuebot compares the running count with
	// it, which fails, and so does the booking's re-check.
	h.exec(`UPDATE limit_record SET int_max_value = NULL WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the NULL max is seen as 0", limitIs(match.Limit{Running: 1, Max: 0}))
	h.exec(`UPDATE limit_record SET int_max_value = 5 WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the raised max is seen", limitIs(match.Limit{Running: 1, Max: 5}))

	render := job.Layers["render"]
	bookFrames(t, db, sim, []string{s.Hosts[seed.LoopbackName(1)]}, []string{job.Frames["0001-render"]})
	h.exec(`INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record) VALUES ('ll-new', $1, $2)`, render, lim)
	h.waitUntil("the new link is seen", func() bool {
		return limitIs(match.Limit{Running: 2, Max: 5})() && slices.Contains(caps.LayerLimits(render), lim)
	})
	h.exec(`DELETE FROM layer_limit WHERE pk_layer_limit = 'll-new'`)
	h.waitUntil("the removed link is seen", limitIs(match.Limit{Running: 1, Max: 5}))
	audittest.Clean(t, db.Pool)
}

// TestCounterRowRefusedByGuard: a host running four frames of a managed show
// moves to cloud.general, where the show's burst (200) is below what they
// hold. The subscription's recompute is refused by Cuebot's guard: it blocks
// no other row, is reported (CountersRefused, the gauge), is not retried
// until its rows change, and is recomputed once the burst is raised.
func TestCounterRowRefusedByGuard(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	sim := newSim(db)
	ctx := context.Background()
	job, alpha, cloud := s.Jobs["job-a"], s.Shows["alpha"], s.Allocs["cloud.general"]
	moved, other := s.Hosts[seed.LoopbackName(0)], s.Hosts[seed.LoopbackName(1)]
	bookFrames(t, db, sim, []string{moved}, []string{job.Frames["0001-render"], job.Frames["0002-render"],
		job.Frames["0003-render"], job.Frames["0004-render"]})
	bookFrames(t, db, sim, []string{other}, []string{job.Frames["0001-lit"]})
	h := newReplicaHarness(t, db, nil).start()
	h.countersSettled()
	audittest.Clean(t, db.Pool)
	refusedGauge := func() float64 {
		var m dto.Metric
		if err := h.r.metrics.CountersRefused.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}

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
	refused := h.r.CountersRefused()
	if len(refused) != 1 || refused[0].Table != "subscription" ||
		refused[0].Row != (counters.Proc{Show: alpha, Alloc: cloud}) {
		t.Fatalf("refused %+v, want alpha's cloud.general subscription", refused)
	}
	if got := refusedGauge(); got != 1 {
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
		h.waitUntil(what, func() bool { return len(h.r.CountersRefused()) == 0 })
		h.countersSettled()
		if got := refusedGauge(); got != 0 {
			t.Errorf("gauge of refused counter rows %v, want 0", got)
		}
		audittest.Clean(t, db.Pool)
	}
	h.exec(`UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, s.Allocs["local.general"], moved)
	brought("the refused row is recomputed after the host moved back")
	// ...or the burst raised.
	h.exec(`UPDATE host SET pk_alloc = $1 WHERE pk_host = $2`, cloud, moved)
	h.sync()
	h.waitUntil("the row is refused again", func() bool { return len(h.r.CountersRefused()) == 1 })
	h.exec(`UPDATE subscription SET int_burst = 1000 WHERE pk_show = $1 AND pk_alloc = $2`, alpha, cloud)
	brought("the refused row is recomputed after the burst was raised")
}
