package cache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/counters"
)

// Cuesched owns the five counters of managed shows (DESIGN.md): Cuebot no
// longer lowers them when it releases a proc. The stream is the record of
// releases (the acct_release notification is only a hint): every applied
// delete of a managed show's proc on a host this instance owns marks the
// counter rows it was counted in, and a goroutine recomputes what has been
// marked with counters.Recompute, one transaction per batch: whatever
// arrived while the previous batch ran forms the next one. After every
// snapshot the counters of every managed show are recomputed once, for the
// releases no stream saw.
//
// The stream can deliver a commit a moment before the committing session has
// made it visible to other sessions' snapshots. A batch therefore first locks
// its released procs' rows (proc comes before the counters in DESIGN.md's
// lock order): a row whose delete is not yet visible makes the lock wait for
// the deleting transaction to end, so the sums that follow see the delete.

type marked struct {
	proc, host string
	p          counters.Proc
}

type counterWork struct {
	mu      sync.Mutex
	procs   map[counters.Proc]struct{}
	gone    map[string]struct{} // the released procs' keys
	shows   []string
	busy    bool
	waiters []chan struct{}
	kick    chan struct{}
}

func (w *counterWork) addProcs(ms []marked, owns func(string) bool) {
	w.mu.Lock()
	n := 0
	for _, m := range ms {
		if owns(m.host) {
			w.procs[m.p] = struct{}{}
			w.gone[m.proc] = struct{}{}
			n++
		}
	}
	w.mu.Unlock()
	if n > 0 {
		w.poke()
	}
}

func (w *counterWork) addShows(shows []string) {
	w.mu.Lock()
	w.shows = mergeShows(w.shows, shows)
	w.mu.Unlock()
	w.poke()
}

func mergeShows(a, b []string) []string {
	for _, s := range b {
		found := false
		for _, x := range a {
			if x == s {
				found = true
				break
			}
		}
		if !found {
			a = append(a, s)
		}
	}
	return a
}

func (w *counterWork) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *counterWork) settledLocked() bool { return !w.busy && len(w.procs) == 0 && len(w.shows) == 0 }

// CountersSettled returns once no counter recompute is pending or running:
// every release applied so far has been recomputed. With Counters "cuebot"
// it returns at once.
func (r *Replica) CountersSettled(ctx context.Context) error {
	w := r.cnt
	w.mu.Lock()
	if w.settledLocked() {
		w.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	w.waiters = append(w.waiters, ch)
	w.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for counter recomputes: %w", ctx.Err())
	}
}

// runCounters recomputes marked counter rows until ctx ends; then what is
// still marked is recomputed once more, so a graceful stop leaves no
// counter high that this instance knew to bring back.
func (r *Replica) runCounters(ctx context.Context) {
	w := r.cnt
	delay := r.cfg.MinBackoff
	for {
		select {
		case <-ctx.Done():
			r.flushCounters()
			return
		case <-w.kick:
		}
		for {
			w.mu.Lock()
			shows, procs, gone := w.shows, w.procs, w.gone
			if len(shows) == 0 && len(procs) == 0 {
				w.busy = false
				for _, ch := range w.waiters {
					close(ch)
				}
				w.waiters = nil
				w.mu.Unlock()
				break
			}
			w.shows, w.procs, w.gone, w.busy = nil, map[counters.Proc]struct{}{}, map[string]struct{}{}, true
			w.mu.Unlock()

			n, err := r.recompute(ctx, shows, procs, gone)
			if err == nil {
				delay = r.cfg.MinBackoff
				r.metrics.CounterBatches.WithLabelValues("ok").Inc()
				r.observe(ReplicaEvent{Kind: EventCounters, Rows: n, Shows: len(shows)})
				continue
			}
			if ctx.Err() != nil {
				return
			}
			r.metrics.CounterBatches.WithLabelValues("error").Inc()
			r.log.Warn("recompute counters", "err", err, "retry_in", delay)
			r.observe(ReplicaEvent{Kind: EventCounters, Err: err})
			w.mu.Lock()
			w.shows = mergeShows(w.shows, shows)
			for p := range procs {
				w.procs[p] = struct{}{}
			}
			for id := range gone {
				w.gone[id] = struct{}{}
			}
			w.mu.Unlock()
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(delay*2, r.cfg.MaxBackoff)
		}
	}
}

// flushCounters recomputes what is marked, once, on its own deadline.
func (r *Replica) flushCounters() {
	w := r.cnt
	w.mu.Lock()
	shows, procs, gone := w.shows, w.procs, w.gone
	w.shows, w.procs, w.gone = nil, map[counters.Proc]struct{}{}, map[string]struct{}{}
	w.mu.Unlock()
	if len(shows) == 0 && len(procs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	if _, err := r.recompute(ctx, shows, procs, gone); err != nil {
		r.log.Warn("recompute counters at stop; the next instance to start recomputes them", "err", err)
	}
}

// recompute runs one batch: the whole managed shows first, in a
// transaction of their own (each transaction locks in DESIGN.md's order
// from its start), then the marked rows. It returns how many rows were
// marked.
func (r *Replica) recompute(ctx context.Context, shows []string, procs map[counters.Proc]struct{},
	gone map[string]struct{}) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if len(shows) > 0 {
		if err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
			return counters.RecomputeShows(ctx, tx, shows)
		}); err != nil {
			return 0, err
		}
	}
	var rows counters.Rows
	for p := range procs {
		rows.Add(p)
	}
	if rows.Len() > 0 {
		ids := slices.Sorted(maps.Keys(gone))
		if err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM proc WHERE pk_proc = ANY($1) ORDER BY pk_proc FOR UPDATE`, ids); err != nil {
				return fmt.Errorf("wait for the releases of %d procs: %w", len(ids), err)
			}
			return counters.Recompute(ctx, tx, rows)
		}); err != nil {
			return 0, err
		}
	}
	r.metrics.CounterRows.Add(float64(rows.Len()))
	return rows.Len(), nil
}
