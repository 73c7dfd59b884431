package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
)

// worker works one owned cluster: it sleeps until woken, then runs rounds
// while they place frames.
type worker struct {
	s      *Scheduler
	claim  ownership.Claim
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	// quit is closed when the cluster is handed over: the worker books no
	// further batch (nor one still waiting to begin) and ends after the one
	// in flight.
	quit chan struct{}
	// resolved is false until the cluster's launch outbox rows, those a
	// previous owner left, have been read and handed to the launcher. The
	// worker books nothing while it is false.
	resolved bool
	// failures counts the rounds or resolutions failed in a row (backoff).
	failures int
	// placements is the array the worker's rounds build their placements
	// in (match.Options.Buffer), one round at a time: nothing holds a
	// round's placements once it is over (Book copies what it keeps).
	placements []match.Placement
	// round runs one round of the cluster (Scheduler.round).
	round func(context.Context) (roundOutcome, error)
	drops dropBackoff
	pace  pace
	// ctx is the worker's own: its rounds run in it, on its goroutine or
	// on the caller's (Stepped).
	ctx context.Context
}

// pace is the rules between a cluster's rounds, apart from the goroutine
// that sleeps on them so a caller driving the loop in simulated time
// (Stepped) follows the same ones: a wake runs a round unless a drop
// back-off holds the cluster (the round after the back-off sees whatever
// woke it); a round run cancels the retry that was due; a round that asks
// to be tried again after a while (busy, failed, backing off) is.
type pace struct {
	retrying bool // a retry is due: the cluster is not asleep
	holding  bool // the retry is a drop back-off: no wake cuts it short
}

// start reports whether a round runs now, woken or at its retry; when it
// does, the retry due is cancelled.
func (p *pace) start(woken bool) bool {
	if woken && p.holding {
		return false
	}
	p.retrying, p.holding = false, false
	return true
}

// after takes what a round's work asked (again > 0: try again then, hold:
// no wake cuts it short) and reports whether a retry is due.
func (p *pace) after(again time.Duration, hold bool) bool {
	if again <= 0 {
		return false
	}
	p.retrying, p.holding = true, hold
	return true
}

// Back-off of a cluster whose rounds book nothing and only drop: the
// re-check refused the placements for something matching cannot see (a
// frame or host changed under it, a breaker), and each drop requeues its
// layer, which wakes the cluster at once. The first such round is followed
// at once (a layer read again usually places right); from the second in a
// row the worker waits, doubling from dropBackoffMin up to dropBackoffMax,
// and no wake cuts the wait short, so a placement the re-check keeps refusing
// is retried a few times a minute, not thousands of times a second.
const (
	dropBackoffMin = 50 * time.Millisecond
	dropBackoffMax = 5 * time.Second
)

// dropBackoff counts a cluster's rounds in a row that booked nothing and
// only dropped.
type dropBackoff struct {
	min, max time.Duration
	streak   int
}

// next is how long to hold the cluster back after a round that booked and
// dropped so many placements (0: not at all).
func (b *dropBackoff) next(booked, dropped int) time.Duration {
	if booked > 0 || dropped == 0 {
		b.streak = 0
		return 0
	}
	b.streak++
	if b.streak == 1 {
		return 0
	}
	return doubling(b.min, b.max, b.streak-2)
}

// doubling is the n-th wait (from 0) of a back-off that starts at lo and
// doubles up to hi.
func doubling(lo, hi time.Duration, n int) time.Duration {
	return min(lo<<min(n, 20), hi)
}

// newWorker makes a worker; resolved says whether the cluster's launch
// outbox was resolved already. Its goroutine is started by the caller
// (run), unless a caller drives its rounds itself (Stepped).
func newWorker(parent context.Context, s *Scheduler, c ownership.Claim, resolved bool) *worker {
	ctx, cancel := context.WithCancel(parent)
	w := &worker{s: s, claim: c, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		quit: make(chan struct{}), resolved: resolved, drops: dropBackoff{min: dropBackoffMin, max: dropBackoffMax},
		ctx: ctx}
	w.round = func(ctx context.Context) (roundOutcome, error) { return s.round(ctx, c, &w.placements, w.quit) }
	return w
}

// stop ends the worker at once: a batch being committed rolls back with its
// context (shutdown).
func (w *worker) stop() {
	w.cancel()
	<-w.done
}

// leave tells the worker of a cluster handed over to book no further batch
// and to end after the one in flight; finish waits for it.
func (w *worker) leave() {
	close(w.quit)
}

// finish waits for a worker told to leave: the batch in flight commits (the
// handover waits for it, and its fence still holds) and the rest of the
// round is never tried, so a move wastes no placement that matching made. A
// round still busy after retireWait (a database that does not answer) is
// cancelled.
func (w *worker) finish() {
	select {
	case <-w.done:
	case <-time.After(retireWait):
		w.cancel()
		<-w.done
	}
	w.cancel()
}

// retireWait bounds how long a retiring worker may take to finish its batch.
const retireWait = 10 * time.Second

// run sleeps until the cluster is woken (or a retry is due) and then runs a
// round, until the worker is stopped or leaves.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		woken, ok := w.sleep(ctx, retry, !w.pace.retrying)
		if !ok {
			return
		}
		if !w.pace.start(woken) {
			continue // held back: the round after the back-off sees whatever woke it
		}
		retry.Stop() // woken before a retry: the round now is the retry
		again, hold, ok := w.turn(ctx)
		if !ok {
			return
		}
		if w.pace.after(again, hold) {
			retry.Reset(again)
		}
	}
}

// sleep waits for a wake or the retry; asleep says whether the cluster
// counts as asleep meanwhile (no retry is due). ok is false when the worker
// must end.
func (w *worker) sleep(ctx context.Context, retry *time.Timer, asleep bool) (woken, ok bool) {
	if asleep {
		w.s.asleep(1)
		defer w.s.asleep(-1)
	}
	select {
	case <-ctx.Done():
		return false, false
	case <-w.quit:
		return false, false
	case <-w.wake:
		return true, true
	case <-retry.C:
		return false, true
	}
}

// turn waits for one of the Config.Workers turns and runs one round in it
// (work). ok is false when the worker must end.
func (w *worker) turn(ctx context.Context) (again time.Duration, hold, ok bool) {
	select {
	case w.s.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, false, false
	case <-w.quit:
		return 0, false, false
	}
	defer func() { <-w.s.sem }()
	again, hold = w.work(ctx)
	return again, hold, true
}

// work runs one round; it returns how long to wait before trying again
// when the cluster was busy or the round failed (0: sleep until woken), and
// whether that wait is a back-off from rounds that only dropped, which no
// wake cuts short. A round that placed frames wakes its worker again: the
// cluster goes on after the clusters already waiting for a turn, so clusters
// whose work keeps coming never starve the others of the Workers bound.
func (w *worker) work(ctx context.Context) (time.Duration, bool) {
	if !w.resolved {
		if err := w.resolve(ctx); err != nil {
			if ctx.Err() != nil {
				return 0, false
			}
			w.s.log.Warn("resolve launch outbox: retrying before the cluster books again", "cluster", w.claim.Key,
				"attempt", w.failures, "err", err)
			return w.backoff(), false
		}
	}
	// A batch whose commit outcome is unknown is resolved by the launcher
	// (dispatch.Booker hands it the cluster), retried until done.
	out, err := w.round(ctx)
	streak := w.drops.streak
	hold := w.drops.next(out.booked, out.dropped)
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, dispatch.ErrFenced):
		// Ownership moved under us; its change signal stops this worker.
		w.s.log.Warn("cluster fenced: another instance owns it now", "cluster", w.claim.Key)
	case err != nil:
		w.s.log.Error("round failed", "cluster", w.claim.Key, "err", err)
		return w.backoff(), false
	case hold > 0:
		// Once per streak: the drops metric counts every one.
		if w.drops.streak == 2 {
			w.s.log.Warn("cluster backs off: its rounds book nothing and only drop placements",
				"cluster", w.claim.Key, "dropped", out.dropped, "reasons", out.dropReasons, "backoff", hold)
		}
		return hold, true
	case out.busy:
		return w.s.cfg.BusyRetry, false
	case out.booked > 0 || out.deferred:
		if streak >= 2 && out.booked > 0 {
			w.s.log.Info("cluster books again after backing off", "cluster", w.claim.Key, "rounds", streak)
		}
		signal(w.wake)
	}
	if err == nil {
		w.failures = 0
	}
	return 0, false
}

// resolve hands the cluster's unresolved launch outbox rows to the launcher.
func (w *worker) resolve(ctx context.Context) error {
	if w.s.deps.Launcher == nil {
		w.resolved = true
		return nil
	}
	n, err := w.s.deps.Launcher.Resolve(ctx, []int32{w.claim.ID})
	if err != nil {
		return err
	}
	w.resolved, w.failures = true, 0
	if n > 0 {
		w.s.log.Info("resolving bookings left unlaunched", "cluster", w.claim.Key, "bookings", n)
	}
	return nil
}

// backoff counts a failure and returns how long to wait before the next
// try: 100 ms, doubling to 5 s, so a database that is down is not hammered.
func (w *worker) backoff() time.Duration {
	w.failures++
	return doubling(100*time.Millisecond, 5*time.Second, w.failures-1)
}

// roundOutcome is what one round did.
type roundOutcome struct {
	booked      int
	dropped     int                         // placements the re-check refused
	dropReasons map[dispatch.DropReason]int // of dropped
	busy        bool                        // another transaction held the cluster's booking lock
	deferred    bool                        // the round's bound cut placeable work short
}

// round plans a cluster's pending layers and books the placements, keeping
// tag pressure's demand current. It builds the placements in *buf and leaves
// the array there, emptied, for the caller's next round.
func (s *Scheduler) round(ctx context.Context, c ownership.Claim, buf *[]match.Placement,
	leaving <-chan struct{}) (roundOutcome, error) {
	var out roundOutcome
	live, err := s.pending(ctx, c.Key)
	if err != nil {
		return out, err
	}
	s.reserve(ctx, c, live) // with none live, drops the cluster's
	if len(live) == 0 {
		s.setWaits(c.Key, nil)
		return out, nil
	}
	res := s.plan(c.Key, live, *buf, s.reservations(ctx))
	defer func() {
		// Cleared, so the array holds no layer or host of this round.
		clear(res.Placements)
		*buf = res.Placements[:0]
	}()
	s.setWaits(c.Key, res.Waits)
	s.count(live, res)
	s.logPlan(ctx, c.Key, live, res)
	for _, wt := range res.Waits {
		out.deferred = out.deferred || wt.Reason == match.ReasonDeferred
	}
	if len(res.Placements) == 0 {
		s.reserved(c.Key, res.Waits, nil)
		return out, nil
	}
	out, booked, err := s.commit(ctx, c, res.Placements, leaving, out)
	s.reserved(c.Key, res.Waits, booked)
	return out, err
}

// pending is the cluster's queued layers this instance may book (the
// shows ownership allows), with their waiting frames; layers found without
// any are drained from the queue.
func (s *Scheduler) pending(ctx context.Context, key cluster.Key) ([]*match.Layer, error) {
	q := s.deps.Queue
	layers := q.Layers(key)
	kept := layers[:0]
	for _, l := range layers {
		if s.deps.Owner.AllowsShow(key, l.ShowName) {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return nil, nil
	}
	if err := q.Frames(ctx, kept, s.cfg.FramesPerLayer); err != nil {
		return nil, err
	}
	live := kept[:0]
	for _, l := range kept {
		if len(l.Frames) == 0 {
			q.Drained(l.ID)
			continue
		}
		live = append(live, l)
	}
	if s.cfg.Reservations {
		match.FillServiceRuns(live)
	}
	return live, nil
}

// plan matches the layers to the cluster's hosts (match.Plan), building the
// placements in buf.
func (s *Scheduler) plan(key cluster.Key, live []*match.Layer, buf []match.Placement,
	resv *match.ReservationSet) match.Result {
	s.mu.Lock()
	keyer := s.keyer
	s.seed++
	seed := s.seed
	s.mu.Unlock()
	s.demand.refresh(s)
	return match.Plan(live, s.deps.Hosts, s.deps.Caps, match.Options{
		Reservations:    resv,
		Now:             s.cfg.Now(),
		Seed:            seed,
		Policy:          s.cfg.Policy,
		Order:           s.cfg.Order,
		SelfishServices: s.cfg.SelfishServices,
		Locality:        s.cfg.Locality,
		Memory:          s.cfg.Memory,
		MaxPlacements:   s.cfg.RoundPlacements,
		TagFilter:       tagFilter(keyer, key),
		Allocs:          s.allocsOf(key),
		Buffer:          buf,
	})
}

func (s *Scheduler) logPlan(ctx context.Context, key cluster.Key, live []*match.Layer, res match.Result) {
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	reasons := map[match.Reason]int{}
	for _, wt := range res.Waits {
		reasons[wt.Reason]++
	}
	s.log.Debug("round planned", "cluster", key, "layers", len(live), "placements", len(res.Placements),
		"waits", reasons)
}

// tagFilter counts the tags of a layer that fall in the cluster.
func tagFilter(keyer *cluster.Keyer, key cluster.Key) func(facility, tag string) bool {
	return func(facility, tag string) bool { return keyer.OfTag(facility, tag) == key }
}

// tagFilter is the cluster's, over the keyer of now.
func (s *Scheduler) tagFilter(key cluster.Key) func(facility, tag string) bool {
	s.mu.Lock()
	keyer := s.keyer
	s.mu.Unlock()
	return tagFilter(keyer, key)
}

// commit books a round's placements, holds the capacity booked and gives
// back to the hosts what was not booked; it adds to out what the booking
// did and returns the bookings.
func (s *Scheduler) commit(ctx context.Context, c ownership.Claim, ps []match.Placement, leaving <-chan struct{},
	out roundOutcome) (roundOutcome, []dispatch.Booking, error) {
	br, untried, err := s.book(ctx, c, ps, leaving)
	s.attempts(len(br.Booked), len(br.Dropped), len(br.Deferred))
	if s.deps.Hold != nil && len(br.Booked) > 0 {
		s.deps.Hold.Hold(br)
	}
	s.demand.bookedFrames(s, br.Booked)
	out.booked, out.dropped = len(br.Booked), len(br.Dropped)
	if out.booked > 0 && s.cfg.OnBooked != nil {
		s.cfg.OnBooked(br.Booked)
	}
	out.dropReasons = s.giveBack(c.Key, br, untried)
	out.busy = br.Busy
	return out, br.Booked, err
}

// giveBack returns to the hosts the capacity of the placements not booked,
// has the layers of those dropped read again (what the queue holds of them
// may be stale: a version, a cap) and returns the drops by reason.
func (s *Scheduler) giveBack(key cluster.Key, br dispatch.BatchResult,
	untried []match.Placement) map[dispatch.DropReason]int {
	var reasons map[dispatch.DropReason]int
	requeue := map[string]struct{}{}
	var returned []match.Host
	for _, d := range br.Dropped {
		if reasons == nil {
			reasons = map[dispatch.DropReason]int{}
		}
		reasons[d.Reason]++
		s.deps.Hosts.Return(d.Placement.Host.ID, d.Placement.Size)
		returned = append(returned, d.Placement.Host)
		requeue[d.Placement.Layer.ID] = struct{}{}
	}
	for _, p := range append(br.Deferred, untried...) {
		s.deps.Hosts.Return(p.Host.ID, p.Size)
		returned = append(returned, p.Host)
	}
	for id := range requeue {
		s.deps.Queue.Requeue(id)
	}
	// Capacity this round held and gave back may be what another cluster
	// sharing those hosts found missing: wake the others (this one runs
	// again or is woken by the requeue).
	s.wakeOthers(key, returned)
	return reasons
}

// book hands placements to dispatch one batch at a time until leaving is
// closed, so a cluster handed over mid-round stops between batches, or
// before a batch waiting for the instance's other batches begins; what it
// never tried comes back untried.
func (s *Scheduler) book(ctx context.Context, c ownership.Claim, ps []match.Placement,
	leaving <-chan struct{}) (res dispatch.BatchResult, untried []match.Placement, _ error) {
	for len(ps) > 0 {
		select {
		case <-leaving:
			return res, ps, nil
		default:
		}
		n := min(len(ps), max(1, s.deps.Booker.BatchSize(c.ID)))
		br, err := s.deps.Booker.Book(ctx, dispatch.Cluster{ID: c.ID, Key: c.Key, Leaving: leaving}, ps[:n])
		if len(br.Untried) > 0 {
			untried = append(untried, br.Untried...)
		}
		res.Booked = append(res.Booked, br.Booked...)
		res.Dropped = append(res.Dropped, br.Dropped...)
		res.Deferred = append(res.Deferred, br.Deferred...)
		res.LSN = max(res.LSN, br.LSN)
		ps = ps[n:]
		if err != nil || br.Busy {
			// As one Book call over all of them would: the rest is
			// deferred with the batch that failed or found the cluster busy.
			res.Busy = br.Busy
			res.Deferred = append(res.Deferred, ps...)
			return res, untried, err
		}
		if len(br.Untried) > 0 {
			return res, append(untried, ps...), nil
		}
	}
	return res, untried, nil
}

// wakeOthers wakes every cluster of the given hosts but key.
func (s *Scheduler) wakeOthers(key cluster.Key, hosts []match.Host) {
	if len(hosts) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h.ID] {
			continue
		}
		seen[h.ID] = true
		for _, k := range s.keyer.OfHost(h.Facility, h.Alloc, h.Tags) {
			if w := s.workers[k]; w != nil && k != key {
				signal(w.wake)
			}
		}
	}
}

// allocsOf is the allocations a cluster's hosts may belong to, for the
// shows' subscription tiers: one for an allocation cluster, every
// allocation of the facility for a tag bucket.
func (s *Scheduler) allocsOf(key cluster.Key) []string {
	if key.Kind == cluster.KindAlloc {
		return []string{key.Alloc}
	}
	var out []string
	for _, a := range s.deps.Hosts.Allocs() {
		if a.Facility == key.Facility {
			out = append(out, a.ID)
		}
	}
	return out
}

func (s *Scheduler) setWaits(key cluster.Key, waits []match.Wait) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, wt := range s.waits[key] {
		s.reasons[wt.Reason]--
	}
	if len(waits) == 0 {
		delete(s.waits, key)
	} else {
		s.waits[key] = waits
	}
	for _, wt := range waits {
		s.reasons[wt.Reason]++
	}
	if m := s.cfg.Loop; m != nil {
		for r, n := range s.reasons {
			m.LayersWaiting.WithLabelValues(string(r)).Set(float64(n))
		}
	}
}

// asleep moves the clusters-asleep gauge by d.
func (s *Scheduler) asleep(d float64) {
	if m := s.cfg.Loop; m != nil {
		m.ClustersAsleep.Add(d)
	}
}

// attempts counts a round's placements by how they ended: every one not
// booked was a wasted attempt (DESIGN.md).
func (s *Scheduler) attempts(booked, dropped, deferred int) {
	if s.cfg.OnAttempts != nil {
		s.cfg.OnAttempts(booked, dropped, deferred)
	}
	if m := s.cfg.Loop; m != nil {
		m.Attempts.WithLabelValues("booked").Add(float64(booked))
		m.Attempts.WithLabelValues("dropped").Add(float64(dropped))
		m.Attempts.WithLabelValues("deferred").Add(float64(deferred))
	}
}

// count feeds OpenCue's metrics.
func (s *Scheduler) count(layers []*match.Layer, res match.Result) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	jobs := map[string]struct{}{}
	for _, l := range layers {
		jobs[l.JobID] = struct{}{}
	}
	m.JobsProcessed.Add(float64(len(jobs)))
	for _, wt := range res.Waits {
		switch wt.Reason {
		case match.ReasonCapacity, match.ReasonNoFit, match.ReasonNoHost:
			m.NoCandidateIterations.Inc()
		}
	}
}
