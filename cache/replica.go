package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/match"
)

// ReplicaConfig is what a Replica needs.
type ReplicaConfig struct {
	// DSN is the database (libpq URL or key=value); the feed opens its own
	// connections to it.
	DSN string
	// Feed is "events" (default: the logical replication stream) or "poll"
	// (a whole load every PollEvery, for servers without logical
	// replication).
	Feed string
	// PollEvery is the poll's interval (Feed "poll"); <= 0 means 5s.
	PollEvery time.Duration
	// Pool runs the limit reloads.
	Pool *pgxpool.Pool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Locality: follow the procs the feed applies, so each host remembers
	// the layers and jobs that ran on it (match.Host.Ran, for matching's
	// locality). Off, nothing reads that memory: every proc booked or
	// released would pay for it for nothing.
	Locality bool
	// HostPingMaxAge: hosts pinged longer ago than this (by Now) are not
	// offered; <= 0 means never stale.
	HostPingMaxAge time.Duration
	// Now is the clock staleness is judged by; nil means time.Now.
	Now func() time.Time
	// OnCounters, when set, receives what each applied transaction or
	// loaded snapshot did to the counters of managed shows, when it did
	// anything (package counters brings them back to SUM(proc)); nil when
	// Cuebot lowers them itself. It runs on the feed's goroutine, outside
	// the cache's locks, and must not block.
	OnCounters func(CounterChanges)
	// OnHosts, when set, is called after a snapshot is installed and after
	// every applied transaction that grew hosts' replicated capacity (a
	// release gave a host its resources back, a host became offered) or may
	// have changed the set of clusters (topology: hosts, their tags or
	// allocations came, went or moved). It runs on the stream's goroutine,
	// outside the cache's locks, and must return quickly.
	OnHosts func(grown []match.Host, topology bool)
	// OnHint, when set, receives each distinct work hint a transaction sent
	// into the change stream (migration 0008's retries: a logical decoding
	// message with prefix cdc.WorkChannel, the payload a cuesched_work
	// notification would carry), with the transaction's xid, after the
	// transaction is applied. The transaction may not yet be visible to
	// other sessions then (see queue.Queue.StreamHint). It runs on the stream's
	// goroutine and must not block: queue.Queue.StreamHint.
	OnHint func(xid uint32, payload string)
	// OnReset, when set, is called after every snapshot load: hints sent
	// while no stream ran are gone, so whoever relies on them rebuilds
	// (queue.Queue.ResyncLater). It runs on the stream's goroutine and must not
	// block.
	OnReset func()
	// Observe, when set, receives typed signals of the replica's progress
	// (tests wait on them). It runs on the goroutine that makes the
	// progress and must return quickly.
	Observe func(ReplicaEvent)
	// Timeout bounds one limit reload.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound retries of failed reloads and of
	// the feed's sessions.
	MinBackoff, MaxBackoff time.Duration
}

// ReplicaEventKind says what a ReplicaEvent reports.
type ReplicaEventKind uint8

const (
	// EventStream carries an event of the replication stream (Stream).
	EventStream ReplicaEventKind = iota + 1
	// EventLoading: the snapshot load is about to read Table.
	EventLoading
	// EventLimits: the limits were reloaded, or the reload failed with Err.
	EventLimits
)

// ReplicaEvent is a typed signal of a Replica's progress.
type ReplicaEvent struct {
	Kind   ReplicaEventKind
	Stream cdc.StreamEvent
	Table  string
	Err    error
}

// Replica keeps the host index, usage and caps equal to the database: it
// is the Sink of its feed, a cdc.Stream (a snapshot at every (re)connect,
// then the change stream) or a cdc.Poller (a snapshot every interval), reads
// the limits by query, and reports what it decoded that changes the
// counters of managed shows (OnCounters). It writes nothing.
type Replica struct {
	cfg     ReplicaConfig
	log     *slog.Logger
	hosts   *Hosts
	usage   *Usage
	feed    cdc.Feed
	stream  *cdc.Stream // nil when polling
	metrics *ReplicaMetrics
	// polled is set once a poll has loaded a state: later polls report
	// what changed since the previous one. Only the feed's goroutine
	// touches it.
	polled bool

	limitsKick chan struct{}

	// checked caches, per relation seen, whether it carries every column
	// the cache reads. Only the stream's goroutine touches it.
	checked map[*cdc.Relation]error
}

// NewReplica returns a replica; Run starts it.
func NewReplica(cfg ReplicaConfig) *Replica {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
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
	r := &Replica{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "cache"),
		hosts:      NewHosts(cfg.Now, cfg.HostPingMaxAge),
		usage:      NewUsage(),
		metrics:    NewReplicaMetrics(cfg.Registerer),
		limitsKick: make(chan struct{}, 1),
		checked:    map[*cdc.Relation]error{},
	}
	onEvent := func(e cdc.StreamEvent) { r.observe(ReplicaEvent{Kind: EventStream, Stream: e}) }
	if cfg.Feed == "poll" {
		every := cfg.PollEvery
		if every <= 0 {
			every = 5 * time.Second
		}
		p := cdc.NewPoller(cfg.DSN, r, every, cfg.Logger)
		p.Metrics, p.OnEvent = r.metrics.Stream, onEvent
		p.MinBackoff, p.MaxBackoff = cfg.MinBackoff, cfg.MaxBackoff
		r.feed = p
		return r
	}
	r.stream = cdc.NewStream(cfg.DSN, r, cfg.Logger)
	r.stream.Metrics = r.metrics.Stream
	r.stream.MinBackoff, r.stream.MaxBackoff = cfg.MinBackoff, cfg.MaxBackoff
	r.stream.OnEvent = onEvent
	r.feed = r.stream
	return r
}

// Hosts is the host index (match.Hosts, plus Booked).
func (r *Replica) Hosts() *Hosts { return r.hosts }

// Usage is usage and caps (match.Caps).
func (r *Replica) Usage() *Usage { return r.usage }

// Stream is the replication stream, nil when the replica polls; tune its
// fields before Run.
func (r *Replica) Stream() *cdc.Stream { return r.stream }

// Ready is closed once the first snapshot is loaded.
func (r *Replica) Ready() <-chan struct{} { return r.feed.Ready() }

// WaitApplied returns once the cache reflects every transaction committed
// before lsn.
func (r *Replica) WaitApplied(ctx context.Context, lsn cdc.LSN) error {
	return r.feed.WaitApplied(ctx, lsn)
}

// Applied is the position up to which the cache reflects every committed
// transaction.
func (r *Replica) Applied() cdc.LSN { return r.feed.Applied() }

// LagBytes is the WAL between the server's last known position and what
// the cache has applied.
func (r *Replica) LagBytes() int64 { return r.metrics.Stream.Lag() }

// OnHosts sets ReplicaConfig.OnHosts, for a listener built after the
// replica (the loop). Call it before Run.
func (r *Replica) OnHosts(fn func(grown []match.Host, topology bool)) { r.cfg.OnHosts = fn }

// Booked is Hosts().Booked: dispatch calls it for each booking it committed,
// with the pg_current_wal_lsn() it read right after the commit.
func (r *Replica) Booked(hostID string, size match.Resources, commitLSN cdc.LSN, xid uint32) {
	r.hosts.Booked(hostID, size, commitLSN, xid)
}

func (r *Replica) observe(e ReplicaEvent) {
	if r.cfg.Observe != nil {
		r.cfg.Observe(e)
	}
}

// Run keeps the replica fresh until ctx ends: its feed and the limit
// reloads. It returns nil then, with no replication slot left behind.
func (r *Replica) Run(ctx context.Context) error {
	if r.cfg.Pool == nil {
		return errors.New("cache: ReplicaConfig.Pool is required")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.runLimits(ctx) }()
	r.LimitsChanged()
	err := r.feed.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// Reset implements cdc.Sink: it loads every replicated table inside the
// snapshot into a new state, then swaps it in under the locks, carrying over
// the capacity checked out or booked and not yet echoed.
//
// After a (re)connect of the stream anything may have changed unseen, so
// every host counts as grown and every managed show is reported for its
// counters (CounterChanges.Shows). A poll after the first knows the state it
// replaces: it reports only the hosts that grew since, and only the procs
// gone since (as Apply reports deleted procs), with Polled set for the
// procs booked and released between two polls, which no poll saw, since
// recomputing every managed show would lock every counter row every
// interval.
func (r *Replica) Reset(ctx context.Context, tx pgx.Tx, lsn cdc.LSN) error {
	clear(r.checked)
	r.usage.mu.RLock()
	limits := r.usage.st.limits
	r.usage.mu.RUnlock()
	hs, us := newHostState(), newUsageState(limits)
	for _, tb := range tables {
		r.observe(ReplicaEvent{Kind: EventLoading, Table: tb.name})
		err := cdc.LoadTable(ctx, tx, tb.name, tb.cols, func(rel *cdc.Relation, t cdc.Tuple) error {
			r.applyOne(hs, us, &cdc.Change{Op: cdc.Insert, Rel: rel, New: t}, nil)
			return nil
		})
		if err != nil {
			return err
		}
	}
	hs.refreshDirty(r.hosts.cutoff())
	incremental := r.stream == nil && r.polled
	r.hosts.mu.Lock()
	r.usage.mu.Lock()
	old, oldUsage := r.hosts.st, r.usage.st
	r.hosts.swapLocked(hs, lsn)
	var grown []match.Host
	topo := true
	if incremental {
		grown, topo = hs.changesSince(old, r.hosts.cutoff())
	} else {
		grown, _ = hs.drainChanges()
	}
	// A load inserts every row, which is no change of a cap or a host's
	// allocation: the recompute of every managed show (or, polling, of the
	// rows found off their sums) covers what a refused row needs.
	us.capped, us.moved = nil, nil
	us.setLimits(r.usage.st.limits) // a reload may have landed during the load
	r.usage.st = us
	r.usage.mu.Unlock()
	r.hosts.mu.Unlock()
	if r.cfg.OnHosts != nil && (len(grown) > 0 || topo) {
		r.cfg.OnHosts(grown, topo)
	}
	if r.cfg.OnCounters != nil {
		if incremental {
			r.counters(CounterChanges{Released: us.released(oldUsage), Polled: true})
		} else {
			// Releases while no stream ran (before the start, during a
			// disconnect) left counters high: every managed show.
			r.counters(CounterChanges{Shows: us.managedShows()})
		}
	}
	r.polled = r.stream == nil
	if r.cfg.OnReset != nil {
		r.cfg.OnReset()
	}
	return nil
}

// Apply implements cdc.Sink: one transaction, atomically for readers.
func (r *Replica) Apply(t *cdc.Txn) error {
	needHosts, needUsage := false, false
	for i := range t.Changes {
		c := &t.Changes[i]
		if tableByName[c.Rel.Name] == nil {
			continue
		}
		if c.Op == cdc.Truncate {
			return fmt.Errorf("truncate of %s: the cache resyncs", c.Rel.Name)
		}
		if hostTable(c.Rel.Name) {
			needHosts = true
		}
		needUsage = needUsage || c.Rel.Name == "host" || !hostTable(c.Rel.Name)
	}
	var cc CounterChanges
	var mark func(ReleasedProc)
	if r.cfg.OnCounters != nil {
		mark = func(p ReleasedProc) { cc.Released = append(cc.Released, p) }
	}
	// The host index takes the commit's position even when the transaction
	// touched none of its tables: it releases the holds of bookings.
	r.hosts.mu.Lock()
	if needUsage {
		r.usage.mu.Lock()
	}
	for i := range t.Changes {
		r.applyOne(r.hosts.st, r.usage.st, &t.Changes[i], mark)
	}
	if needHosts {
		r.hosts.st.refreshDirty(r.hosts.cutoff())
	}
	r.hosts.echoLocked(t.Xid)
	r.hosts.advanceLocked(t.EndLSN)
	var grown []match.Host
	var topo bool
	if needHosts {
		grown, topo = r.hosts.st.drainChanges()
	}
	if needUsage {
		if mark != nil {
			cc.Capped, cc.Moved = r.usage.st.capped, r.usage.st.moved
		}
		r.usage.st.capped, r.usage.st.moved = nil, nil
		r.usage.mu.Unlock()
	}
	r.hosts.mu.Unlock()
	if r.cfg.OnHosts != nil && (len(grown) > 0 || topo) {
		r.cfg.OnHosts(grown, topo)
	}
	r.counters(cc)
	r.hint(t.Xid, t.Messages)
	return nil
}

// hint hands the transaction's work hints on, each distinct payload once,
// as PostgreSQL delivers a transaction's identical notifications once.
func (r *Replica) hint(xid uint32, msgs []cdc.Message) {
	if r.cfg.OnHint == nil {
		return
	}
	var seen map[cdc.Message]bool
	for _, m := range msgs {
		if m.Prefix != cdc.WorkChannel || seen[m] {
			continue
		}
		if seen == nil {
			seen = map[cdc.Message]bool{}
		}
		seen[m] = true
		r.cfg.OnHint(xid, m.Content)
	}
}

// Advance implements cdc.Sink.
func (r *Replica) Advance(lsn cdc.LSN) {
	r.hosts.mu.Lock()
	r.hosts.advanceLocked(lsn)
	r.hosts.mu.Unlock()
}

// applyOne applies one change to the given states; a malformed row is
// logged with its key, counted and skipped.
func (r *Replica) applyOne(hs *hostState, us *usageState, c *cdc.Change, mark func(ReleasedProc)) {
	spec := tableByName[c.Rel.Name]
	if spec == nil {
		return
	}
	err := r.checkRelation(c.Rel, spec)
	if err == nil {
		if hostTable(spec.name) {
			var host string
			var gone bool
			host, gone, err = hs.apply(c)
			if err == nil && host != "" {
				alloc := ""
				if !gone {
					alloc = hs.hosts[host].row.alloc
				}
				us.setHostAlloc(host, alloc)
			}
		} else if spec.name == "proc" && r.cfg.Locality {
			err = procRan(hs, us, c, r.hosts.now(), func() error { return us.apply(c, mark) })
		} else {
			err = us.apply(c, mark)
		}
	}
	if err != nil {
		r.metrics.Malformed.WithLabelValues(spec.name).Inc()
		var m *malformed
		if errors.As(err, &m) {
			r.log.Error("skipping malformed row", "table", m.table, "key", m.key, "op", c.Op.String(), "err", m.err)
		} else {
			r.log.Error("skipping change", "table", spec.name, "op", c.Op.String(), "err", err)
		}
	}
}

// checkRelation refuses rows of a relation that lacks a column the cache
// reads (a publication edited by hand): they would read as zeros.
func (r *Replica) checkRelation(rel *cdc.Relation, spec *table) error {
	err, ok := r.checked[rel]
	if !ok {
		for _, col := range spec.cols {
			if rel.Col(col) < 0 {
				err = fmt.Errorf("column %s is not published: run the migrations (publication %s)", col, cdc.Publication)
				break
			}
		}
		r.checked[rel] = err
	}
	return err
}
