// Package instance is one cuesched instance: every part built from the
// settings (the host cache and its replication stream, the pending-layer
// queue and its listener, ownership, the launcher, the loop, the status
// publisher, the metrics server), started, and stopped in order. `cuesched
// run`, the demo and the in-process acceptance tests all run this one
// wiring.
package instance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/activity"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/launch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/queue"
	"github.com/cuesched/cuesched/reservation"
	"github.com/cuesched/cuesched/scheduler"
	"github.com/cuesched/cuesched/status"
)

// Options are what a caller adds to the settings; the zero value is
// `cuesched run`.
type Options struct {
	// Registry receives the instance's metrics (nil: a registry of its own).
	// Tests read the figures of an in-process instance from it.
	Registry *prometheus.Registry
	// OnBooked is scheduler.Config.OnBooked: the bookings of every batch
	// that committed some, with their commit times.
	OnBooked func([]dispatch.Booking)
	// OnReady is called once the host cache holds its first snapshot, just
	// before the loop starts.
	OnReady func()
	// Version is the binary's version, the cuesched_build_info metric's
	// version label ("" reads "unknown").
	Version string
}

// Run runs every part of an instance until ctx ends, then stops them in
// order: the loop first (each cluster finishes or rolls back its batch in
// flight), then ownership (which hands every cluster over at once), then the
// feeds and the launcher.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, opt Options) error {
	buckets, err := readBuckets(ctx, pool)
	if err != nil {
		if ctx.Err() != nil {
			// Told to stop (SIGTERM) while starting: a clean exit.
			log.Info("stopped while starting", "step", err)
			return nil
		}
		return err
	}
	reg := opt.Registry
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	metrics.RegisterBuildInfo(reg, opt.Version)
	p, err := build(cfg, log, pool, buckets, reg, opt)
	if err != nil {
		return err
	}
	defer p.close()
	srv, err := metrics.Listen(cfg.MetricsAddr, reg, p.ready)
	if err != nil {
		return err
	}
	log.Info("serving metrics", "addr", srv.Addr())
	return p.serve(ctx, srv, opt)
}

// readBuckets reads the deployment's tag bucket count (cuesched.setting).
func readBuckets(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT value::int FROM cuesched.setting WHERE name = 'tag_buckets'`).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errors.New("cuesched.setting has no tag_buckets: run `cuesched migrate up`")
	}
	if err != nil {
		return 0, fmt.Errorf("read tag_buckets: %w", err)
	}
	return n, nil
}

// ownBookings is how many of its latest booking transactions an instance
// remembers as its own: far more than it commits in the time the stream
// takes to carry one back.
const ownBookings = 4096

// parts are the parts of an instance, built and wired.
type parts struct {
	cfg      config.Config
	log      *slog.Logger
	pool     *pgxpool.Pool
	queue    *queue.Queue
	replica  *cache.Replica
	counters *counters.Writer
	// onCounters feeds the counters writer from the replica; nil when
	// Cuebot lowers the counters itself (setting "cuebot").
	onCounters func(cache.CounterChanges)
	listener   *cdc.Listener
	// ours are this instance's booking transactions, whose work hints the
	// queue is not given (dispatch.Ours says why).
	ours     *dispatch.Ours
	coord    *ownership.Coordinator
	rqd      *launch.RQDClient // nil: dry run
	launcher *launch.Launcher
	sched    *scheduler.Scheduler
	// activity is what the instance logs of its work at info, per interval.
	activity *activity.Log
	auditor  *audit.Exporter
}

// build builds every part and then wires the loop's events to the parts
// that see them (wire).
func build(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, buckets int, reg *prometheus.Registry,
	opt Options) (*parts, error) {
	sm := metrics.NewScheduler(reg)
	p := &parts{cfg: cfg, log: log, pool: pool, queue: queue.New(pool, log), ours: dispatch.NewOurs(ownBookings)}
	p.queue.Metrics, p.queue.Sched = queue.NewMetrics(reg), sm
	p.queue.MemoryShows = cfg.MemoryFromHistory
	p.counters, p.onCounters = newCounterWriter(cfg.Counters, pool, log, reg)
	p.buildFeeds(reg)
	coord, err := ownership.New(pool, cfg.DB, ownership.Options{
		Name: cfg.Instance, Lease: cfg.Lease,
		Static:  ownership.Static{Facility: cfg.Facility, AllocTags: cfg.AllocTags, ManualTags: cfg.ManualTags},
		Weights: p.queue.Depths, Fenced: dispatch.ErrFenced, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	p.coord = coord
	p.auditor = audit.NewExporter(pool, AuditOptions(cfg), cfg.AuditEvery, log, reg)
	p.activity = activity.New(activity.Config{Logger: log, Interval: cfg.LogSummaryEvery,
		Clusters: func() int { return len(p.coord.View().Claims) }, Waiting: p.waiting})
	if !cfg.DryRun {
		tc, err := cfg.RQDTLS()
		if err != nil {
			return nil, err
		}
		p.rqd = launch.NewRQDClient(launch.RQDConfig{Port: cfg.RQDPort, TLS: tc, CallTimeout: cfg.RQDTimeout,
			Logger: log, Hooks: launch.RQDHooks{OnFailure: p.activity.Failed}})
		p.replica.Hosts().SetGate(p.rqd)
	}
	p.launcher = launch.New(launch.Config{
		Pool: pool, RQD: p.rqd, Workers: cfg.LaunchWorkers, DryRun: cfg.DryRun, Metrics: launch.NewMetrics(reg),
		ReportGrace: cfg.ReportGrace, Logger: log,
	})
	bcfg := dispatch.BookerConfig{
		Pool: pool, Fence: coord, BatchMin: cfg.BatchMin, BatchMax: cfg.BatchMax, DryRun: cfg.DryRun,
		Launcher: p.launcher, Metrics: dispatch.NewMetrics(reg), Scheduler: sm, Logger: log, Ours: p.ours,
	}
	if p.rqd != nil {
		bcfg.HostAllowed = p.rqd.Allowed
	}
	p.sched = scheduler.New(scheduler.Config{
		Policy: Policy(cfg), Order: Order(cfg), SelfishServices: cfg.SelfishServices, Locality: cfg.Locality,
		Memory: Memory(cfg), Reservations: cfg.Reservations, ReservationAfter: cfg.ReservationAfter,
		Workers: cfg.Workers, Logger: log, Metrics: sm, Loop: metrics.NewLoop(reg), OnBooked: opt.OnBooked,
		OnAttempts: func(booked, dropped, _ int) { p.activity.Attempts(booked, dropped) },
	}, scheduler.Deps{
		Queue: p.queue, Hosts: p.replica.Hosts(), Caps: p.replica.Usage(),
		Booker: dispatch.NewBooker(bcfg), Hold: heldByReplica{p.replica}, Launcher: p.launcher, Owner: coord,
		Buckets:           buckets,
		RecomputeCounters: func(ctx context.Context) error { return counters.RecomputeManaged(ctx, pool) },
		Running:           running(pool, p.replica.Hosts()),
		Reservations:      reservation.New(pool, coord),
	})
	p.wire()
	return p, nil
}

// buildFeeds builds the host cache with its replication stream and the
// listener of notifications.
func (p *parts) buildFeeds(reg *prometheus.Registry) {
	cfg, log, pending := p.cfg, p.log, p.queue
	rcfg := cache.ReplicaConfig{
		DSN: cfg.DB, Feed: cfg.Feed, PollEvery: cfg.PollEvery, Pool: p.pool, Logger: log, Registerer: reg,
		HostPingMaxAge: cfg.HostPingMaxAge, OnCounters: p.onCounters, Locality: cfg.Locality,
	}
	if cfg.Feed == "events" {
		// Retries' hints come through the change stream (migration 0008),
		// as do the drained hints of bookings (0013), which are for the
		// other instances when the booking is this one's.
		rcfg.OnHint = func(xid uint32, payload string) {
			if !p.ours.Has(xid) {
				pending.StreamHint(xid, payload)
			}
		}
		rcfg.OnReset = pending.ResyncLater
	}
	p.replica = cache.NewReplica(rcfg)
	p.replica.Hosts().SetPressureFraction(cfg.TagPressure)
	p.listener = cdc.NewListener(cfg.DB, log)
	p.listener.Metrics = cdc.NewListenMetrics(reg)
	if cfg.Feed == "events" {
		p.listener.Handle(cdc.WorkChannel, pending.Notify)
		p.listener.OnConnect(pending.Resync)
	}
	p.listener.Handle(cache.LimitsChannel, func(string) { p.replica.LimitsChanged() })
	p.listener.OnConnect(p.replica.ReloadLimits)
}

// wire registers the loop's events with the parts that see them, now that
// the loop is built.
func (p *parts) wire() {
	sched, hosts := p.sched, p.replica.Hosts()
	p.replica.OnHosts(sched.HostsChanged)
	p.counters.SetOwns(sched.OwnsHost)
	p.queue.OnWork(sched.Wake)
	// New work may have tipped the balance: the leader looks at once, so a
	// burst is spread over the instances while it is booked.
	p.queue.OnWork(func(cluster.Key) { p.coord.WeightsChanged() })
	p.launcher.OnSettled(func(s launch.Settled) {
		switch s.Result {
		case launch.SettledReleased:
			sched.Released(s.LayerID)
			p.activity.Released()
		case launch.SettledLaunched:
			p.activity.Launched()
		}
	})
	if p.rqd != nil {
		// Matching left the host out while its breaker was open (SetGate):
		// offer it again by waking its clusters.
		p.rqd.OnHostAllowed(func(name string) {
			if h, ok := hosts.HostNamed(name); ok {
				sched.HostsChanged([]match.Host{h}, false)
			}
		})
	}
}

// waiting is the loop's layers waiting by reason, for the activity log.
func (p *parts) waiting() map[string]int {
	w := p.sched.Waiting()
	out := make(map[string]int, len(w))
	for r, n := range w {
		out[string(r)] = n
	}
	return out
}

// heldByReplica holds booked capacity in the host cache until the stream
// has applied the booking (cache.Replica.Booked).
type heldByReplica struct{ r *cache.Replica }

func (h heldByReplica) Hold(br dispatch.BatchResult) {
	for _, b := range br.Booked {
		h.r.Booked(b.Host.ID, b.Size, br.LSN, b.Xid)
	}
}

func (p *parts) close() {
	if p.rqd != nil {
		p.rqd.Close()
	}
}

// ready is the readiness check: the host cache holds a snapshot and the
// instance is registered with the others.
func (p *parts) ready() error {
	select {
	case <-p.replica.Ready():
	default:
		return errors.New("host cache snapshot not loaded")
	}
	if p.coord.View().Instance == 0 {
		return errors.New("not registered with the other instances")
	}
	return nil
}

// serve starts every part, the loop once the host cache holds a snapshot,
// and stops them in order when ctx ends or a part fails.
func (p *parts) serve(ctx context.Context, srv *metrics.Server, opt Options) error {
	cfg, log := p.cfg, p.log
	feeds, stopFeeds := context.WithCancel(context.Background())
	defer stopFeeds()
	coordCtx, stopCoord := context.WithCancel(context.Background())
	defer stopCoord()
	g, gctx := errgroup.WithContext(feeds)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return p.replica.Run(gctx) })
	if p.onCounters != nil {
		g.Go(func() error { return p.counters.Run(gctx) })
	}
	g.Go(func() error { return p.queue.Run(gctx) })
	if cfg.Feed == "poll" {
		// Work is found by the poller; the listener carries only the limit
		// changes.
		g.Go(func() error { return p.queue.Poll(gctx, cfg.PollEvery) })
	}
	g.Go(func() error { return p.listener.Run(gctx) })
	g.Go(func() error { return p.launcher.Run(gctx) })
	g.Go(func() error { return p.auditor.Run(gctx) })
	coordDone := make(chan error, 1)
	go func() { coordDone <- p.coord.Run(coordCtx) }()
	// The activity log stops last, so that its final summary counts what
	// the loop and the launcher did while stopping.
	actCtx, stopAct := context.WithCancel(context.Background())
	defer stopAct()
	actDone := make(chan error, 1)
	go func() { actDone <- p.activity.Run(actCtx) }()
	// Status publishing stops after the loop, before the handover.
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- newStatusPublisher(p.pool, p.coord, p.sched, p.replica, p.counters, log).Run(pubCtx)
	}()

	// The loop starts once the cache holds a snapshot: planning against an
	// empty index would only record waits.
	select {
	case <-p.replica.Ready():
		if opt.OnReady != nil {
			opt.OnReady()
		}
	case <-ctx.Done():
	case <-gctx.Done():
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	schedDone := make(chan error, 1)
	go func() { schedDone <- p.sched.Run(schedCtx) }()

	var failure error
	select {
	case <-ctx.Done():
		log.Info("stopping: finishing batches in flight and handing clusters over")
	case <-gctx.Done():
		failure = g.Wait()
	case err := <-coordDone:
		failure = fmt.Errorf("ownership: %w", err)
		coordDone <- err
	}
	stopSched()
	<-schedDone
	stopPub()
	<-pubDone
	stopCoord()
	if err := <-coordDone; err != nil && failure == nil && !errors.Is(err, context.Canceled) {
		failure = err
	}
	stopFeeds()
	if err := g.Wait(); err != nil && failure == nil && !errors.Is(err, context.Canceled) {
		failure = err
	}
	stopAct()
	<-actDone
	if failure != nil {
		return failure
	}
	log.Info("stopped")
	return nil
}

// AuditOptions are the audit's options for a farm shared with Cuebot, as
// `cuesched audit` and a running instance both audit it: Cuebot's own procs
// of the shows it books are left alone, and with --counters cuebot the
// counters are Cuebot's.
func AuditOptions(cfg config.Config) audit.Options {
	return audit.Options{AllowUnmanaged: true, SkipCounters: cfg.Counters == "cuebot", OutboxAge: cfg.OutboxAge}
}

// Policy is the placement policy the settings name.
func Policy(cfg config.Config) match.Policy {
	if cfg.Policy == "epvm" {
		return match.NewEPVM(0, 0)
	}
	return match.BestFit{}
}

// running reads the frames running on hosts for reservations' planning.
func running(pool *pgxpool.Pool, hosts reservation.Hosts) scheduler.Running {
	r := reservation.NewReader(pool, hosts)
	return scheduler.RunningFunc(func(ctx context.Context) scheduler.RunningRead { return r.Running(ctx) })
}

// Memory is memory from history as the settings give it.
func Memory(cfg config.Config) match.Memory {
	return match.Memory{Shows: cfg.MemoryFromHistory, Headroom: cfg.MemoryHeadroom}
}

// Order is the layer order the settings name.
func Order(cfg config.Config) match.Order {
	if cfg.Order == "strict" {
		return match.OrderStrict
	}
	return match.OrderLottery
}

// newStatusPublisher is the publisher Run runs: it reads the instance's
// claims from ownership, the reasons from the loop, the lag from the
// replica's feed and the refused counter rows from the counters writer.
func newStatusPublisher(pool status.Execer, coord *ownership.Coordinator, sched *scheduler.Scheduler,
	replica *cache.Replica, cnt *counters.Writer, log *slog.Logger) *status.Publisher {
	return status.NewPublisher(status.PublisherConfig{
		DB: pool, Logger: log,
		Source: status.Source{
			Instance: func() (int32, []status.Owned) {
				v := coord.View()
				owned := make([]status.Owned, 0, len(v.Claims))
				for _, c := range v.Claims {
					owned = append(owned, status.Owned{ID: c.ID, Key: c.Key})
				}
				return v.Instance, owned
			},
			Waits: sched.Waits,
			Replication: func() status.Replication {
				return status.Replication{Applied: replica.Applied(), LagBytes: replica.LagBytes()}
			},
			Refused: func() []status.Refused {
				var out []status.Refused
				for _, f := range cnt.Refused() {
					out = append(out, status.Refused{Table: f.Table, Key: f.Key, Err: f.Err})
				}
				return out
			},
		},
	})
}
