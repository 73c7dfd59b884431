// Package scheduler is the event-driven loop of `cuesched run`: for every
// cluster this instance owns it plans the cluster's pending layers against
// the host cache (match) and commits the placements (dispatch), and then
// sleeps until something wakes the cluster: new work from the queue, capacity
// freed in the replicated stream, a start-after time. Nothing reads work on a
// timer.
//
// Clusters are worked concurrently with a bound (Config.Workers); each has
// its own goroutine, so a slow cluster never stalls the others. Which
// clusters this instance works is ownership's decision; the loop follows its
// changes, resolving the launch outbox and recomputing counters of what it
// takes over before booking there.
//
// ports.go is where to start: the interfaces through which the loop reads
// and submits, and the events that wake it. scheduler/schedulertest runs the
// loop against in-memory parts.
package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
)

// Config tunes the loop.
type Config struct {
	Policy          match.Policy // nil: best fit
	Order           match.Order
	SelfishServices []string
	// Locality prefers, among hosts that fit equally well, one that
	// recently ran the layer or its job (match.Options.Locality).
	Locality bool
	// Memory books some shows' frames with what their layers' finished
	// frames used (memory from history); the zero value books requests.
	Memory match.Memory
	// Reservations has a layer that waits for capacity or no-fit longer
	// than ReservationAfter (sooner for a higher priority: match.Threshold)
	// reserve the hosts expected to free soonest, where other layers' frames
	// only backfill (match/reserve.go). It needs Deps.Running.
	Reservations     bool
	ReservationAfter time.Duration
	// OnReserved, when set, receives the reservations each round made, on
	// the cluster's worker goroutine (the simulator counts them).
	OnReserved func(made []match.Reservation)
	// Workers is how many clusters plan and book at the same time.
	Workers int
	// FramesPerLayer is how many waiting frames of each layer a round reads.
	FramesPerLayer int
	// RoundPlacements bounds the placements of one round, so new work of a
	// higher priority never waits behind a long round.
	RoundPlacements int
	// BusyRetry is how long a cluster whose booking lock another
	// transaction held waits before trying again.
	BusyRetry time.Duration
	Logger    *slog.Logger
	Metrics   *metrics.Scheduler // OpenCue's metrics; nil: not counted
	Loop      *metrics.Loop      // cuesched's own; nil: not counted
	Now       func() time.Time
	// Clock is the loop's own timing (tag pressure's debounce); nil: the
	// wall clock. The simulator gives its simulated clock here; Now stays
	// what matching compares start-after times with (a harness fixes it).
	Clock func() time.Time
	// OnBooked, when set, receives the bookings of every Book call that
	// committed some (each with its CommitAt), on the cluster's worker
	// goroutine: it must return quickly. Benchmarks take the scheduler's
	// own commit times from it.
	OnBooked func([]dispatch.Booking)
	// OnAttempts, when set, receives how a round's placements ended: booked,
	// dropped by the re-check, or deferred (DESIGN.md's attempts), on the
	// cluster's worker goroutine: it must return quickly. The instance's
	// activity log counts them.
	OnAttempts func(booked, dropped, deferred int)
}

// Scheduler is the loop.
type Scheduler struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	topo chan struct{} // the set of clusters may have changed

	mu       sync.Mutex
	keyer    *cluster.Keyer
	workers  map[cluster.Key]*worker
	owned    map[string]bool // pk_alloc of the allocation clusters owned
	waits    map[cluster.Key][]match.Wait
	reasons  map[match.Reason]int // layers waiting over waits, by reason (the gauge)
	resv     map[cluster.Key]*resvState
	resvRead resvRead
	// resvSet indexes every cluster's held reservations (without a
	// database to keep them), rebuilt when resvSetOK is false.
	resvSet   *match.ReservationSet
	resvSetOK bool
	demand    *demand // tag pressure's demand, shared by the workers
	sem       chan struct{}
	seed      int64
	// stepped: the caller runs the workers' rounds (Drive), no goroutine.
	stepped bool
}

// New returns a loop over deps.
func New(cfg Config, deps Deps) *Scheduler {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.FramesPerLayer <= 0 {
		cfg.FramesPerLayer = 32
	}
	if cfg.RoundPlacements <= 0 {
		cfg.RoundPlacements = 2000
	}
	if cfg.BusyRetry <= 0 {
		cfg.BusyRetry = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Scheduler{
		cfg:     cfg,
		deps:    deps,
		log:     cfg.Logger,
		topo:    make(chan struct{}, 1),
		workers: map[cluster.Key]*worker{},
		owned:   map[string]bool{},
		waits:   map[cluster.Key][]match.Wait{},
		reasons: map[match.Reason]int{},
		resv:    map[cluster.Key]*resvState{},
		sem:     make(chan struct{}, cfg.Workers),
		demand:  newDemand(),
	}
	s.keyer = cluster.NewKeyer(nil, deps.Buckets)
	if cfg.Loop != nil {
		// Every reason is exported from the start, at 0: a dashboard shows
		// zero rather than no data, and rules see a series to compare.
		for _, r := range match.Reasons {
			cfg.Loop.LayersWaiting.WithLabelValues(string(r))
		}
	}
	return s
}

// HostsChanged is the cache's OnHosts: capacity grew on some hosts (wake
// their clusters) or the set of clusters may have changed.
func (s *Scheduler) HostsChanged(grown []match.Host, topology bool) {
	if topology {
		signal(s.topo)
	}
	if len(grown) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range grown {
		for _, key := range s.keyer.OfHost(h.Facility, h.Alloc, h.Tags) {
			if w := s.workers[key]; w != nil {
				signal(w.wake)
			}
		}
	}
}

// works reports whether this instance works the cluster.
func (s *Scheduler) works(key cluster.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workers[key] != nil
}

// Wake wakes the worker of a cluster, if this instance works it (the
// queue's OnWork).
func (s *Scheduler) Wake(key cluster.Key) {
	s.mu.Lock()
	w := s.workers[key]
	s.mu.Unlock()
	if w != nil {
		signal(w.wake)
	}
}

// OwnsHost reports whether this instance owns the allocation cluster of a
// host: that instance recomputes the counters its released procs touched.
func (s *Scheduler) OwnsHost(hostID string) bool {
	h, ok := s.deps.Hosts.Host(hostID)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[h.Alloc]
}

// Released is a released booking (the launcher's OnSettled, adapted by
// instance): its frame is WAITING again, so its layer is read again and its
// cluster woken.
func (s *Scheduler) Released(layerID string) {
	if layerID != "" {
		s.deps.Queue.Requeue(layerID)
	}
}

// Waits returns why the layers of a cluster waited after its last round.
func (s *Scheduler) Waits(key cluster.Key) []match.Wait {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waits[key]
}

// Waiting is how many layers of the clusters this instance works waited
// after their last round, by reason (the layers-waiting gauge).
func (s *Scheduler) Waiting() map[match.Reason]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[match.Reason]int, len(s.reasons))
	for r, n := range s.reasons {
		if n > 0 {
			out[r] = n
		}
	}
	return out
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run works the owned clusters until ctx ends, then stops every worker
// (each finishes or rolls back the batch in flight) and returns.
func (s *Scheduler) Run(ctx context.Context) error {
	s.discover()
	// Changes is closed at the next change and then replaced: take it again
	// after every signal (before reading the view, so no change is missed),
	// or every later select finds it closed and the loop spins.
	changes := s.deps.Owner.Changes()
	s.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			s.stopAll()
			return nil
		case <-changes:
			changes = s.deps.Owner.Changes()
			s.reconcile(ctx)
		case <-s.topo:
			s.discover()
		}
	}
}

// discover recomputes the clusters there are from the replicated hosts and
// hands them to ownership.
func (s *Scheduler) discover() {
	keyer := cluster.NewKeyer(s.deps.Hosts.Allocs(), s.deps.Buckets)
	s.mu.Lock()
	s.keyer = keyer
	s.mu.Unlock()
	s.deps.Owner.SetClusters(s.deps.Hosts.ClusterKeys(keyer))
}

// reconcile follows ownership: it hands over the clusters lost and starts
// workers for those gained, once their launch outbox is resolved and their
// counters recomputed.
func (s *Scheduler) reconcile(ctx context.Context) {
	stop, gained := s.follow(s.deps.Owner.View())
	if len(stop) > 0 || len(gained) > 0 {
		s.demand.invalidate()
	}
	for _, w := range stop {
		s.handOver(w)
	}
	if len(gained) == 0 {
		return
	}
	resolved := s.resolveGained(ctx, gained)
	s.takeOver(ctx)
	s.start(ctx, gained, resolved)
}

// follow takes the workers of the clusters no longer claimed (or claimed
// under another epoch) out of the loop, notes the allocation clusters
// owned, and returns those workers and the claims that have none.
func (s *Scheduler) follow(view ownership.View) (stop []*worker, gained []ownership.Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, w := range s.workers {
		if c, ok := view.Claims[key]; !ok || c.Epoch != w.claim.Epoch {
			stop = append(stop, w)
			delete(s.workers, key)
			delete(s.resv, key)
			s.resvSetOK = false
		}
	}
	clear(s.owned)
	for key, c := range view.Claims {
		if key.Kind == cluster.KindAlloc {
			s.owned[key.Alloc] = true
		}
		if _, ok := s.workers[key]; !ok {
			gained = append(gained, c)
		}
	}
	return stop, gained
}

// handOver ends the worker of a cluster lost: it books no further batch,
// and the one in flight commits before the handover goes on.
func (s *Scheduler) handOver(w *worker) {
	w.leave()
	s.log.Info("cluster lost", "cluster", w.claim.Key, "epoch", w.claim.Epoch)
	w.finish()
	s.setWaits(w.claim.Key, nil) // another instance explains it now
}

// start starts the workers of the clusters gained; resolved says whether
// their launch outbox rows were handed to the launcher already.
func (s *Scheduler) start(ctx context.Context, gained []ownership.Claim, resolved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range gained {
		if _, ok := s.workers[c.Key]; ok {
			continue
		}
		w := newWorker(ctx, s, c, resolved)
		if !s.stepped {
			go w.run(w.ctx)
		}
		s.workers[c.Key] = w
		signal(w.wake)
		s.log.Info("cluster owned", "cluster", c.Key, "id", c.ID, "epoch", c.Epoch)
	}
}

// resolveGained hands the launch outbox rows of every cluster gained to the
// launcher in one read, and reports whether it did; if not, each new worker
// resolves its own cluster, retrying until done, before it books.
func (s *Scheduler) resolveGained(ctx context.Context, gained []ownership.Claim) bool {
	if s.deps.Launcher == nil {
		return true
	}
	ids := make([]int32, len(gained))
	for i, c := range gained {
		ids[i] = c.ID
	}
	n, err := s.deps.Launcher.Resolve(ctx, ids)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("resolve launch outbox of clusters gained: each retries before it books", "clusters", len(ids),
				"err", err)
		}
		return false
	}
	if n > 0 {
		s.log.Info("resolving bookings left unlaunched", "clusters", len(ids), "bookings", n)
	}
	return true
}

// takeOver brings the counters of managed shows back to SUM(proc) when
// clusters are gained, since releases may have happened while no one owned
// them. (Bookings a previous owner left unlaunched: resolveGained.)
func (s *Scheduler) takeOver(ctx context.Context) {
	if s.deps.RecomputeCounters == nil {
		return
	}
	if err := s.deps.RecomputeCounters(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("recompute counters of clusters taken over", "err", err)
	}
}

func (s *Scheduler) stopAll() {
	s.mu.Lock()
	ws := make([]*worker, 0, len(s.workers))
	for key, w := range s.workers {
		ws = append(ws, w)
		delete(s.workers, key)
	}
	clear(s.resv)
	s.resvSetOK = false
	s.mu.Unlock()
	for _, w := range ws {
		w.stop()
		s.setWaits(w.claim.Key, nil)
	}
}
