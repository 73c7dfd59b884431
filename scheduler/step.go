package scheduler

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/cuesched/cuesched/cluster"
)

// Stepped is one owned cluster of a loop whose caller runs the rounds
// (Drive) instead of a goroutine sleeping on timers: package sim runs it in
// simulated time. Its rounds are the worker's, decided by the same code
// (work: back-off, busy retry, outbox resolution before booking, waking
// itself again after a round that placed frames) and paced by the same
// rules (pace); the caller only turns "retry after d" into an event d
// later on its own clock. Events reach it as they reach a worker (Wake,
// HostsChanged, a requeue): Woken takes them.
type Stepped struct{ w *worker }

// Drive is Run for a caller that runs the rounds itself: it discovers the
// clusters, follows ownership's view once, as Run does when it starts
// (resolving the launch outbox and recomputing counters of what it owns),
// and returns the clusters owned in key order, each woken once. Nothing runs
// on a goroutine of its own; the caller must not call Run, and calls the
// Stepped one at a time.
func (s *Scheduler) Drive(ctx context.Context) []*Stepped {
	s.mu.Lock()
	s.stepped = true
	s.mu.Unlock()
	s.discover()
	s.reconcile(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Stepped, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, &Stepped{w: w})
	}
	slices.SortFunc(out, func(a, b *Stepped) int { return strings.Compare(a.Key().String(), b.Key().String()) })
	return out
}

// Key is the cluster's.
func (c *Stepped) Key() cluster.Key { return c.w.claim.Key }

// Woken takes the cluster's wake, if one came since, and runs the round it
// calls for, unless a drop back-off holds the cluster (the wake is taken
// all the same, as the worker does). ran says whether a round ran; retry is
// how long after it the cluster asks to be tried again (Due), 0 for not
// unless woken. A round that ran cancels the retry due before it.
func (c *Stepped) Woken() (ran bool, retry time.Duration) {
	select {
	case <-c.w.wake:
	default:
		return false, 0
	}
	if !c.w.pace.start(true) {
		return false, 0
	}
	return true, c.round()
}

// Due runs the round of the retry the last round asked for, come due.
func (c *Stepped) Due() (retry time.Duration) {
	c.w.pace.start(false)
	return c.round()
}

func (c *Stepped) round() time.Duration {
	again, hold := c.w.work(c.w.ctx)
	if c.w.pace.after(again, hold) {
		return again
	}
	return 0
}

// Settle runs the rounds the clusters were woken for, one at a time in the
// order given, pass after pass until a pass runs none: a round that placed
// frames wakes its cluster again, and the cluster goes on after the others
// woken, as with the loop's Workers bound. After each round ran gets the
// cluster's index and the retry it asked for (Woken's); after each pass
// between, when not nil, delivers what came meanwhile (capacity grown,
// reads applied). The simulator and the loop harness settle alike.
func Settle(cs []*Stepped, ran func(i int, retry time.Duration), between func()) {
	for {
		woken := false
		for i, c := range cs {
			if ok, retry := c.Woken(); ok {
				woken = true
				ran(i, retry)
			}
		}
		if between != nil {
			between()
		}
		if !woken {
			return
		}
	}
}
