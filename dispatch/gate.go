package dispatch

import (
	"context"
	"slices"
	"sync"

	"github.com/cuesched/cuesched/match"
)

// showGate lets one booking transaction per show of an instance into the
// database at a time.
//
// Bookings of one show serialize in PostgreSQL whatever we do: each locks
// the show's point row and its subscription rows (Cuebot's counters) until
// it commits. A transaction that meets another's lock there has already
// locked its hosts, host_stat and layer_stat rows (they come first in the
// lock order), and holds them while it waits, so Cuebot's writes to those
// hosts (a proc released, a host locked) and this instance's other clusters
// wait behind the queue as well. Waiting here instead, before taking a
// connection, keeps a booking's locks held only while it runs; bookings of
// different shows still run side by side, and another instance's bookings
// still meet ours in the database.
type showGate struct {
	mu    sync.Mutex
	slots map[string]chan struct{} // one token per show ID, taken while booking
}

// enter waits until no other booking of the instance holds any show of ps,
// taking them in ID order (so two batches never hold one show each of the
// other's), and returns what lets them go (once, however often it is
// called). On ctx's end it lets go what it took and returns ctx's error.
func (g *showGate) enter(ctx context.Context, ps []match.Placement) (leave func(), err error) {
	var shows []string
	for _, p := range ps {
		if p.Layer != nil {
			shows = append(shows, p.Layer.ShowID)
		}
	}
	slices.Sort(shows)
	shows = slices.Compact(shows)
	held := make([]chan struct{}, 0, len(shows))
	leave = sync.OnceFunc(func() {
		for _, s := range held {
			s <- struct{}{}
		}
	})
	for _, show := range shows {
		s := g.slot(show)
		select {
		case <-s:
			held = append(held, s)
		case <-ctx.Done():
			leave()
			return nil, ctx.Err()
		}
	}
	return leave, nil
}

// slot is show's token channel, made (holding its token) on first use.
func (g *showGate) slot(show string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.slots == nil {
		g.slots = map[string]chan struct{}{}
	}
	s, ok := g.slots[show]
	if !ok {
		s = make(chan struct{}, 1)
		s <- struct{}{}
		g.slots[show] = s
	}
	return s
}
