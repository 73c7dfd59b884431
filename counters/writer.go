package counters

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/cuesched/cuesched/internal/wait"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Cuesched owns the five counters of managed shows (DESIGN.md): Cuebot no
// longer lowers them when it releases a proc. The replica's feed is the
// record of releases (the acct_release notification is only a hint): it
// reports every delete of a managed show's proc it applies (Changed), and a
// Writer recomputes the counter rows it was counted in when its host is in
// a cluster this instance owns, with Recompute, one transaction per batch:
// whatever arrived while the previous batch ran forms the next one. After
// every snapshot loaded whole the counters of every managed show are
// recomputed once, for the releases no feed saw. A host that moves to
// another allocation with procs on it marks the two subscriptions its procs
// left and joined. After a poll that follows another, the rows off their
// sums (Drifted) are recomputed too: procs booked and released between two
// polls were seen by neither.
//
// A row Cuebot's guard refuses (Refusal: the true sum is above a cap, after
// such a move) is held at its cap by Recompute, blocks nothing else, and is
// reported (Refused, the cuesched_counters_refused gauge, one log line when
// it becomes refused and one when it is back). It is not retried on a
// timer: only when its rows change, by a release or a move (which mark it
// as any row) or a change of its cap (Changes.Capped).
//
// The feed can deliver a commit a moment before the committing session has
// made it visible to other sessions' snapshots. A batch therefore first
// locks its released procs' rows (proc comes before the counters in
// DESIGN.md's lock order): a row whose delete is not yet visible makes the
// lock wait for the deleting transaction to end, so the sums that follow
// see the delete.

// WriterConfig is what a Writer needs.
type WriterConfig struct {
	// Pool runs the recomputes.
	Pool *pgxpool.Pool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Owns reports whether this instance owns the allocation cluster of a
	// host, and so recomputes the counters its released procs and its
	// moves touched; nil means every host (one instance).
	Owns func(hostID string) bool
	// Observe, when set, receives every batch recomputed or failed (tests
	// wait on them). It runs on the writer's goroutine and must return
	// quickly.
	Observe func(Batch)
	// Timeout bounds one batch; <= 0 means 30s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound retries of failed batches.
	MinBackoff, MaxBackoff time.Duration
}

// Batch reports one batch: Rows counter rows marked and recomputed and
// Shows managed shows recomputed whole, or Err (the batch is retried).
type Batch struct {
	Rows, Shows int
	Err         error
}

// Released is a deleted proc of a managed show: its id, its host and the
// counter rows it was counted in.
type Released struct {
	Proc, Host string
	Rows       Proc
}

// Moved is a subscription (Show, Alloc) the procs of a managed show on Host
// left or joined when the host changed allocation.
type Moved struct{ Host, Show, Alloc string }

// Changes is what one transaction the replica applied, or one snapshot it
// loaded, did to the counters of managed shows.
type Changes struct {
	Released []Released
	Moved    []Moved
	// Capped are counter rows whose cap changed: a guard may accept the
	// sum of a refused one now. A cap change leaves other rows' sums alone.
	Capped []Proc
	// Shows, after a snapshot loaded whole (a (re)connect of the stream,
	// the first poll), are every managed show: releases while no feed ran
	// may have left any of their rows high.
	Shows []string
	// Polled is set after a poll that followed another: procs booked and
	// released between the two were seen by neither, so the next batch
	// also recomputes the rows off their sums (Drifted). No host tells
	// whose those are, so every polling instance recomputes them; the
	// recompute is idempotent and writes only the rows still off.
	Polled bool
}

// Writer recomputes the counter rows of managed shows that the replica's
// changes mark; Run runs it.
type Writer struct {
	cfg     WriterConfig
	log     *slog.Logger
	metrics *metrics
	kick    chan struct{}

	mu      sync.Mutex
	pending batch
	// refused holds the rows a guard refused at their last recompute, by
	// the mark of the row alone.
	refused map[Proc]Refusal
	busy    bool
	waiters []chan struct{}
}

// batch is what is marked to recompute.
type batch struct {
	procs map[Proc]struct{}
	// first are the rows whose change marked counter rows: a recompute
	// locks them first so that its sums see the change (see above).
	firstProcs map[string]struct{} // released procs
	firstHosts map[string]struct{} // hosts that moved to another allocation
	shows      []string
	drift      bool
}

func newBatch() batch {
	return batch{procs: map[Proc]struct{}{}, firstProcs: map[string]struct{}{}, firstHosts: map[string]struct{}{}}
}

func (b *batch) empty() bool { return len(b.procs) == 0 && len(b.shows) == 0 && !b.drift }

// merge adds o, a batch that failed, back.
func (b *batch) merge(o batch) {
	maps.Copy(b.procs, o.procs)
	maps.Copy(b.firstProcs, o.firstProcs)
	maps.Copy(b.firstHosts, o.firstHosts)
	b.shows = mergeShows(b.shows, o.shows)
	b.drift = b.drift || o.drift
}

func mergeShows(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// NewWriter returns a writer; Run starts it.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Owns == nil {
		cfg.Owns = func(string) bool { return true }
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 10*time.Second)
	}
	return &Writer{
		cfg: cfg, log: cfg.Logger.With("component", "counters"), metrics: newMetrics(cfg.Registerer),
		kick: make(chan struct{}, 1), pending: newBatch(), refused: map[Proc]Refusal{},
	}
}

// SetOwns sets WriterConfig.Owns, for an owner built after the writer (the
// loop, which needs the replica that feeds the writer). Call it before the
// replica runs.
func (w *Writer) SetOwns(fn func(hostID string) bool) { w.cfg.Owns = fn }

// Changed marks what c changed for the next batch. It does not block: the
// replica calls it on its feed's goroutine.
func (w *Writer) Changed(c Changes) {
	w.mu.Lock()
	n := 0
	for _, r := range c.Released {
		if w.cfg.Owns(r.Host) {
			w.pending.procs[r.Rows] = struct{}{}
			w.pending.firstProcs[r.Proc] = struct{}{}
			n++
		}
	}
	for _, m := range c.Moved {
		if w.cfg.Owns(m.Host) {
			w.pending.procs[Proc{Show: m.Show, Alloc: m.Alloc}] = struct{}{}
			w.pending.firstHosts[m.Host] = struct{}{}
			n++
		}
	}
	for _, p := range c.Capped {
		if _, ok := w.refused[p]; ok {
			w.pending.procs[p] = struct{}{}
			n++
		}
	}
	if len(c.Shows) > 0 || c.Polled {
		w.pending.shows = mergeShows(w.pending.shows, c.Shows)
		w.pending.drift = w.pending.drift || c.Polled
		n++
	}
	w.mu.Unlock()
	if n > 0 {
		w.poke()
	}
}

func (w *Writer) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Settled returns once no recompute is pending or running: every change
// marked so far has been recomputed.
func (w *Writer) Settled(ctx context.Context) error {
	w.mu.Lock()
	if !w.busy && w.pending.empty() {
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

// Refused returns the counter rows a guard refuses now, by table and key.
func (w *Writer) Refused() []Refusal {
	w.mu.Lock()
	out := slices.Collect(maps.Values(w.refused))
	w.mu.Unlock()
	slices.SortFunc(out, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// take hands the pending batch over, or reports that none is left (then
// it wakes the waiters of Settled).
func (w *Writer) take() (batch, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending.empty() {
		w.busy = false
		for _, ch := range w.waiters {
			close(ch)
		}
		w.waiters = nil
		return batch{}, false
	}
	b := w.pending
	w.pending, w.busy = newBatch(), true
	return b, true
}

// Run recomputes marked counter rows until ctx ends; then what is still
// marked is recomputed once more, so a graceful stop leaves no counter high
// that this instance knew to bring back. It returns nil then.
func (w *Writer) Run(ctx context.Context) error {
	if w.cfg.Pool == nil {
		return errors.New("counters: WriterConfig.Pool is required")
	}
	delay := w.cfg.MinBackoff
	for {
		select {
		case <-ctx.Done():
			w.flush()
			return nil
		case <-w.kick:
		}
		for {
			b, ok := w.take()
			if !ok {
				break
			}
			n, err := w.recompute(ctx, b)
			if err == nil {
				delay = w.cfg.MinBackoff
				if n > 0 || len(b.shows) > 0 {
					w.metrics.batches.WithLabelValues("ok").Inc()
					w.observe(Batch{Rows: n, Shows: len(b.shows)})
				}
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			w.metrics.batches.WithLabelValues("error").Inc()
			w.log.Warn("recompute counters", "err", err, "retry_in", delay)
			w.observe(Batch{Err: err})
			w.mu.Lock()
			w.pending.merge(b)
			w.mu.Unlock()
			if !wait.Sleep(ctx, delay) {
				return nil
			}
			delay = min(delay*2, w.cfg.MaxBackoff)
		}
	}
}

func (w *Writer) observe(b Batch) {
	if w.cfg.Observe != nil {
		w.cfg.Observe(b)
	}
}

// flush recomputes what is marked, once, on its own deadline.
func (w *Writer) flush() {
	w.mu.Lock()
	b := w.pending
	w.pending = newBatch()
	w.mu.Unlock()
	if b.empty() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	if _, err := w.recompute(ctx, b); err != nil {
		w.log.Warn("recompute counters at stop; the next instance to start recomputes them", "err", err)
	}
}

// recompute runs one batch: the whole managed shows first, in a
// transaction of their own (each transaction locks in DESIGN.md's order
// from its start), then the marked rows, with the rows found off their sums
// when a poll asked. It returns how many rows were marked.
func (w *Writer) recompute(ctx context.Context, b batch) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	if len(b.shows) > 0 {
		var refused []Refusal
		if err := pgx.BeginFunc(ctx, w.cfg.Pool, func(tx pgx.Tx) error {
			var err error
			refused, err = RecomputeShows(ctx, tx, b.shows)
			return err
		}); err != nil {
			return 0, err
		}
		// Every managed show is recomputed after a snapshot (the only
		// source of shows): its refusals are the whole set.
		w.settleRefused(nil, refused)
	}
	var rows Rows
	for p := range b.procs {
		rows.Add(p)
	}
	if rows.Len() == 0 && !b.drift {
		return 0, nil
	}
	var refused []Refusal
	if err := pgx.BeginFunc(ctx, w.cfg.Pool, func(tx pgx.Tx) error {
		var err error
		refused, err = recomputeMarked(ctx, tx, &rows, b)
		return err
	}); err != nil {
		return 0, err
	}
	if rows.Len() > 0 {
		w.settleRefused(&rows, refused)
	}
	w.metrics.rows.Add(float64(rows.Len()))
	return rows.Len(), nil
}

// recomputeMarked adds to rows those off their sums when b asks, then
// waits for the changes that marked them and recomputes them, in tx.
func recomputeMarked(ctx context.Context, tx pgx.Tx, rows *Rows, b batch) ([]Refusal, error) {
	if b.drift {
		drifted, err := Drifted(ctx, tx)
		if err != nil {
			return nil, err
		}
		for _, p := range drifted {
			rows.Add(p)
		}
	}
	if rows.Len() == 0 {
		return nil, nil
	}
	// FOR SHARE waits for a move still committing, as FOR UPDATE of the
	// procs waits for a release; host comes first in the lock order.
	if hosts := slices.Sorted(maps.Keys(b.firstHosts)); len(hosts) > 0 {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM host WHERE pk_host = ANY($1) ORDER BY pk_host FOR SHARE`, hosts); err != nil {
			return nil, fmt.Errorf("wait for the moves of %d hosts: %w", len(hosts), err)
		}
	}
	ids := slices.Sorted(maps.Keys(b.firstProcs))
	if _, err := tx.Exec(ctx, `SELECT 1 FROM proc WHERE pk_proc = ANY($1) ORDER BY pk_proc FOR UPDATE`, ids); err != nil {
		return nil, fmt.Errorf("wait for the releases of %d procs: %w", len(ids), err)
	}
	return Recompute(ctx, tx, *rows)
}

// settleRefused records the outcome of one committed recompute: refusals
// of the rows it covered (nil: every managed show's) replace what was
// recorded for them. A row is logged when it becomes refused (or its
// guard's message changes) and when it is brought back, not at every
// batch.
func (w *Writer) settleRefused(covered *Rows, refused []Refusal) {
	now := make(map[Proc]Refusal, len(refused))
	for _, f := range refused {
		now[f.Row] = f
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for row, old := range w.refused {
		if _, still := now[row]; !still && (covered == nil || covered.Has(row)) {
			delete(w.refused, row)
			w.log.Info("counter row brought back to its sum", "table", old.Table, "key", old.Key)
		}
	}
	for row, f := range now {
		if old, ok := w.refused[row]; !ok || old.Err != f.Err {
			w.log.Warn("counter row refused by Cuebot's guard: held at its cap, retried when its procs, cap or hosts change",
				"table", f.Table, "key", f.Key, "err", f.Err)
		}
		w.refused[row] = f
	}
	w.metrics.refused.Set(float64(len(w.refused)))
}
