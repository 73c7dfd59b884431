package cache

import (
	"cmp"
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
// releases no stream saw. A host that moves to another allocation with procs
// on it marks the two subscriptions its procs left and joined.
//
// A row Cuebot's guard refuses (counters.Refusal: the true sum is above a
// cap, after such a move) is held at its cap by counters.Recompute, blocks
// nothing else, and is reported (CountersRefused, the
// cuesched_counters_refused gauge, one log line when it becomes refused and
// one when it is back). It is not retried on a timer: only when its rows
// change, by a release or a move (which mark it as any row) or a change of
// its cap (retryRefused).
//
// The stream can deliver a commit a moment before the committing session has
// made it visible to other sessions' snapshots. A batch therefore first locks
// its released procs' rows (proc comes before the counters in DESIGN.md's
// lock order): a row whose delete is not yet visible makes the lock wait for
// the deleting transaction to end, so the sums that follow see the delete.

// marked is a counter row set to recompute: the rows a released proc was
// counted in (proc set), or the subscriptions of a host that moved with
// procs on it (proc empty).
type marked struct {
	proc, host string
	p          counters.Proc
}

// lockFirst are the rows whose change marked counter rows: a recompute
// locks them first so that its sums see the change (see above).
type lockFirst struct {
	procs map[string]struct{} // released procs
	hosts map[string]struct{} // hosts that moved to another allocation
}

func newLockFirst() lockFirst {
	return lockFirst{procs: map[string]struct{}{}, hosts: map[string]struct{}{}}
}

func (l lockFirst) add(o lockFirst) {
	maps.Copy(l.procs, o.procs)
	maps.Copy(l.hosts, o.hosts)
}

type counterWork struct {
	mu    sync.Mutex
	procs map[counters.Proc]struct{}
	first lockFirst
	shows []string
	// refused holds the rows a guard refused at their last recompute, by
	// the mark of the row alone.
	refused map[counters.Proc]counters.Refusal
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
			if m.proc != "" {
				w.first.procs[m.proc] = struct{}{}
			} else {
				w.first.hosts[m.host] = struct{}{}
			}
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
			shows, procs, first := w.shows, w.procs, w.first
			if len(shows) == 0 && len(procs) == 0 {
				w.busy = false
				for _, ch := range w.waiters {
					close(ch)
				}
				w.waiters = nil
				w.mu.Unlock()
				break
			}
			w.shows, w.procs, w.first, w.busy = nil, map[counters.Proc]struct{}{}, newLockFirst(), true
			w.mu.Unlock()

			n, err := r.recompute(ctx, shows, procs, first)
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
			w.first.add(first)
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
	shows, procs, first := w.shows, w.procs, w.first
	w.shows, w.procs, w.first = nil, map[counters.Proc]struct{}{}, newLockFirst()
	w.mu.Unlock()
	if len(shows) == 0 && len(procs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	if _, err := r.recompute(ctx, shows, procs, first); err != nil {
		r.log.Warn("recompute counters at stop; the next instance to start recomputes them", "err", err)
	}
}

// recompute runs one batch: the whole managed shows first, in a
// transaction of their own (each transaction locks in DESIGN.md's order
// from its start), then the marked rows. It returns how many rows were
// marked.
func (r *Replica) recompute(ctx context.Context, shows []string, procs map[counters.Proc]struct{},
	first lockFirst) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if len(shows) > 0 {
		var refused []counters.Refusal
		if err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
			var err error
			refused, err = counters.RecomputeShows(ctx, tx, shows)
			return err
		}); err != nil {
			return 0, err
		}
		// Every managed show is recomputed after a snapshot (the only
		// caller of addShows): its refusals are the whole set.
		r.settleRefused(nil, refused)
	}
	var rows counters.Rows
	for p := range procs {
		rows.Add(p)
	}
	if rows.Len() > 0 {
		hosts, ids := slices.Sorted(maps.Keys(first.hosts)), slices.Sorted(maps.Keys(first.procs))
		var refused []counters.Refusal
		if err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
			// FOR SHARE waits for a move still committing, as FOR UPDATE
			// of the procs waits for a release; host comes first in the
			// lock order.
			if len(hosts) > 0 {
				if _, err := tx.Exec(ctx, `SELECT 1 FROM host WHERE pk_host = ANY($1) ORDER BY pk_host FOR SHARE`, hosts); err != nil {
					return fmt.Errorf("wait for the moves of %d hosts: %w", len(hosts), err)
				}
			}
			if _, err := tx.Exec(ctx, `SELECT 1 FROM proc WHERE pk_proc = ANY($1) ORDER BY pk_proc FOR UPDATE`, ids); err != nil {
				return fmt.Errorf("wait for the releases of %d procs: %w", len(ids), err)
			}
			var err error
			refused, err = counters.Recompute(ctx, tx, rows)
			return err
		}); err != nil {
			return 0, err
		}
		r.settleRefused(&rows, refused)
	}
	r.metrics.CounterRows.Add(float64(rows.Len()))
	return rows.Len(), nil
}

// CountersRefused returns the counter rows a guard refuses now, by table
// and key.
func (r *Replica) CountersRefused() []counters.Refusal {
	w := r.cnt
	w.mu.Lock()
	out := slices.Collect(maps.Values(w.refused))
	w.mu.Unlock()
	slices.SortFunc(out, func(a, b counters.Refusal) int {
		return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// retryRefused queues again the refused rows among rows, whose caps
// changed: a guard may accept their sums now. A cap change leaves the sums
// of other rows as they were.
func (w *counterWork) retryRefused(rows []counters.Proc) {
	w.mu.Lock()
	n := 0
	for _, p := range rows {
		if _, ok := w.refused[p]; ok {
			w.procs[p] = struct{}{}
			n++
		}
	}
	w.mu.Unlock()
	if n > 0 {
		w.poke()
	}
}

// settleRefused records the outcome of one committed recompute: refusals
// of the rows it covered (nil: every managed show's) replace what was
// recorded for them. A row is logged when it becomes refused (or its
// guard's message changes) and when it is brought back, not at every
// batch.
func (r *Replica) settleRefused(covered *counters.Rows, refused []counters.Refusal) {
	w := r.cnt
	now := make(map[counters.Proc]counters.Refusal, len(refused))
	for _, f := range refused {
		now[f.Row] = f
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for row, old := range w.refused {
		if _, still := now[row]; !still && (covered == nil || covered.Has(row)) {
			delete(w.refused, row)
			r.log.Info("counter row brought back to its sum", "table", old.Table, "key", old.Key)
		}
	}
	for row, f := range now {
		if old, ok := w.refused[row]; !ok || old.Err != f.Err {
			r.log.Warn("counter row refused by Cuebot's guard: held at its cap, retried when its procs, cap or hosts change",
				"table", f.Table, "key", f.Key, "err", f.Err)
		}
		w.refused[row] = f
	}
	r.metrics.CountersRefused.Set(float64(len(w.refused)))
}
