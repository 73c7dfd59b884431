package counters_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// harness runs a Writer fed by a real Replica (as internal/instance wires
// them) against a test database. Tests wait on their signals (waitUntil
// wakes on every event), never on sleeps.
type harness struct {
	t   *testing.T
	db  *pgtest.DB
	r   *cache.Replica
	w   *counters.Writer
	reg *prometheus.Registry
	// run is whether the writer runs: with Counters "cuebot" the replica
	// reports nothing and no writer runs.
	run  bool
	poke chan struct{}
	// replicaHook and batchHook, when set, see every event of the replica
	// and every batch of the writer.
	replicaHook atomic.Pointer[func(cache.ReplicaEvent)]
	batchHook   atomic.Pointer[func(counters.Batch)]

	loads, batches atomic.Int64

	stop func()
}

// newHarness builds a replica and a writer wired to it; edit may change
// either configuration (leaving OnCounters nil is Counters "cuebot").
func newHarness(t *testing.T, db *pgtest.DB, edit func(*cache.ReplicaConfig, *counters.WriterConfig)) *harness {
	t.Helper()
	h := &harness{t: t, db: db, reg: prometheus.NewRegistry(), poke: make(chan struct{}, 1)}
	log := slog.New(slog.DiscardHandler)
	wc := counters.WriterConfig{Pool: db.Pool, Logger: log, Registerer: h.reg,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Observe: h.observeBatch}
	rc := cache.ReplicaConfig{DSN: db.DSN, Pool: db.Pool, Logger: log,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Observe: h.observeReplica}
	var w *counters.Writer
	rc.OnCounters = func(c cache.CounterChanges) { w.Changed(changes(c)) }
	if edit != nil {
		edit(&rc, &wc)
	}
	w = counters.NewWriter(wc)
	h.w, h.run = w, rc.OnCounters != nil
	h.r = cache.NewReplica(rc)
	if st := h.r.Stream(); st != nil {
		st.StatusInterval = 200 * time.Millisecond
	}
	return h
}

// changes is what internal/instance hands the writer.
func changes(c cache.CounterChanges) counters.Changes {
	out := counters.Changes{Shows: c.Shows, Polled: c.Polled}
	for _, r := range c.Released {
		out.Released = append(out.Released, counters.Released{Proc: r.Proc, Host: r.Host, Rows: counters.Proc(r.Rows)})
	}
	for _, m := range c.Moved {
		out.Moved = append(out.Moved, counters.Moved(m))
	}
	for _, p := range c.Capped {
		out.Capped = append(out.Capped, counters.Proc(p))
	}
	return out
}

func (h *harness) observeReplica(e cache.ReplicaEvent) {
	if e.Kind == cache.EventStream && e.Stream.Kind == cdc.EventLoaded {
		h.loads.Add(1)
	}
	if f := h.replicaHook.Load(); f != nil {
		(*f)(e)
	}
	h.wake()
}

func (h *harness) observeBatch(b counters.Batch) {
	if b.Err == nil {
		h.batches.Add(1)
	}
	if f := h.batchHook.Load(); f != nil {
		(*f)(b)
	}
	h.wake()
}

func (h *harness) wake() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// start runs the replica (and the writer) until the test ends (or stop)
// and waits for the first snapshot.
func (h *harness) start() *harness {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	runs := []func(context.Context) error{h.r.Run}
	if h.run {
		runs = append(runs, h.w.Run)
	}
	for _, run := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- run(ctx) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			h.t.Errorf("Run did not return")
		}
		close(errs)
		for err := range errs {
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		}
	})
	h.t.Cleanup(h.stop)
	select {
	case <-h.r.Ready():
		return h
	case <-time.After(2 * time.Minute):
		h.t.Fatal("no snapshot loaded")
	}
	return h
}

func (h *harness) waitUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(60 * time.Second)
	for !cond() {
		select {
		case <-h.poke:
		case <-deadline:
			h.t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// sync waits until the replica reflects every commit made so far.
func (h *harness) sync() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var lsn cdc.LSN
	if err := h.db.Pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		h.t.Fatal(err)
	}
	if err := h.r.WaitApplied(ctx, lsn); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) countersSettled() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.w.Settled(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// refusedGauge reads cuesched_counters_refused.
func (h *harness) refusedGauge() float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "cuesched_counters_refused" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	h.t.Fatal("no gauge cuesched_counters_refused")
	return 0
}

func loadFarm(t *testing.T, db *pgtest.DB, f *seed.Farm) *seed.Seeded {
	t.Helper()
	s, err := seed.Load(context.Background(), db.Pool, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// smallFarm: eight hosts in two facilities, a managed show subscribed to
// both, a folder with caps, a limit and one job.
func smallFarm() *seed.Farm {
	f := &seed.Farm{
		Shows: []seed.Show{{Name: "alpha", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 100000, Burst: 200000}, {Alloc: "cloud.general", Size: 0, Burst: 100000}}}},
		Folders: []seed.Folder{{Show: "alpha", Name: "fx", MaxCores: 5000, MaxGPUs: seed.NoCap}},
		Limits:  []seed.Limit{{Name: "lic", Max: 2}},
		Jobs: []seed.Job{{Name: "job-a", Show: "alpha", Folder: "fx", Layers: []seed.Layer{
			{Name: "render", Frames: 5, Cores: 100, Mem: seed.GB, Threadable: true},
			{Name: "comp", Frames: 5, Cores: 100, Mem: seed.GB, Limits: []string{"lic"}},
			{Name: "lit", Frames: 5, Cores: 100, Mem: seed.GB}}}},
	}
	for i := range 8 {
		alloc := "local.general"
		if i >= 6 {
			alloc = "cloud.general"
		}
		f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: alloc, Cores: 800, Mem: 32 * seed.GB,
			ManualTags: []string{fmt.Sprintf("pool%d", i%2+1)}})
	}
	return f
}

// bookFrames books the frames Cuebot-style, round robin over the hosts.
func bookFrames(t *testing.T, sim *cuebotsim.Sim, hosts []string, frames []string) {
	t.Helper()
	for i, f := range frames {
		if _, err := sim.Book(context.Background(), f, hosts[i%len(hosts)], 100, seed.GB, 0, 0); err != nil {
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
