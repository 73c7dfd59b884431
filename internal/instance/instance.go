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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/launch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/queue"
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
}

// Run runs every part of an instance until ctx ends, then stops them in
// order: the loop first (each cluster finishes or rolls back its batch in
// flight), then ownership (which hands every cluster over at once), then the
// feeds and the launcher.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, buckets int, opt Options) error {
	reg := opt.Registry
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	sm := metrics.NewScheduler(reg)

	var sched *scheduler.Scheduler // the cache's callbacks reach it once built
	pending := queue.New(pool, log)
	pending.Metrics, pending.Sched = queue.NewMetrics(reg), sm
	cntWriter, onCounters := newCounterWriter(cfg.Counters, pool, log, reg,
		func(hostID string) bool { return sched.OwnsHost(hostID) })
	rcfg := cache.ReplicaConfig{
		DSN: cfg.DB, Feed: cfg.Feed, PollEvery: cfg.PollEvery, Pool: pool, Logger: log, Registerer: reg,
		HostPingMaxAge: cfg.HostPingMaxAge, OnCounters: onCounters,
		OnHosts: func(grown []match.Host, topology bool) { sched.HostsChanged(grown, topology) },
	}
	if cfg.Feed == "events" {
		// Retries' hints come through the change stream (migration 0008).
		rcfg.OnHint, rcfg.OnReset = pending.StreamHint, pending.ResyncLater
	}
	replica := cache.NewReplica(rcfg)
	replica.Hosts().SetPressureFraction(cfg.TagPressure)
	listener := cdc.NewListener(cfg.DB, log)
	listener.Metrics = cdc.NewListenMetrics(reg)
	if cfg.Feed == "events" {
		listener.Handle(cdc.WorkChannel, pending.Notify)
		listener.OnConnect(pending.Resync)
	}
	listener.Handle(cache.LimitsChannel, func(string) { replica.LimitsChanged() })
	listener.OnConnect(replica.ReloadLimits)

	coord, err := ownership.New(pool, cfg.DB, ownership.Options{
		Name: cfg.Instance, Lease: cfg.Lease,
		Static:  ownership.Static{Facility: cfg.Facility, AllocTags: cfg.AllocTags, ManualTags: cfg.ManualTags},
		Weights: pending.Depths, Fenced: dispatch.ErrFenced, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	var rqd *launch.RQDClient
	if !cfg.DryRun {
		tc, err := cfg.RQDTLS()
		if err != nil {
			return err
		}
		hosts := replica.Hosts()
		rqd = launch.NewRQDClient(launch.RQDConfig{Port: cfg.RQDPort, TLS: tc, CallTimeout: cfg.RQDTimeout,
			Logger: log, Hooks: launch.RQDHooks{
				// Matching left the host out while its breaker was open
				// (SetGate below): offer it again by waking its clusters.
				OnBreakerHalfOpen: func(name string) {
					if h, ok := hosts.HostNamed(name); ok {
						sched.HostsChanged([]match.Host{h}, false)
					}
				},
			}})
		defer rqd.Close()
		hosts.SetGate(rqd)
	}
	launcher := launch.New(launch.Config{
		Pool: pool, RQD: rqd, Workers: cfg.LaunchWorkers, DryRun: cfg.DryRun, Metrics: launch.NewMetrics(reg),
		Logger: log, OnSettled: func(s launch.Settled) { sched.Settled(s) },
	})
	bcfg := dispatch.BookerConfig{
		Pool: pool, Fence: coord, BatchMin: cfg.BatchMin, BatchMax: cfg.BatchMax, DryRun: cfg.DryRun,
		Launcher: launcher, Metrics: dispatch.NewMetrics(reg), Scheduler: sm, Logger: log,
	}
	if rqd != nil {
		bcfg.HostAllowed = rqd.Allowed
	}
	sched = scheduler.New(scheduler.Config{
		Policy: Policy(cfg), Order: Order(cfg), SelfishServices: cfg.SelfishServices,
		Workers: cfg.Workers, Logger: log, Metrics: sm, Loop: metrics.NewLoop(reg), OnBooked: opt.OnBooked,
	}, scheduler.Deps{
		Pool: pool, Hosts: replica.Hosts(), Caps: replica.Usage(), Queue: pending,
		Booker: dispatch.NewBooker(bcfg), Launcher: launcher, Owner: coord,
		Booked: replica.Booked, Buckets: buckets,
		RecomputeCounters: func(ctx context.Context) error { return counters.RecomputeManaged(ctx, pool) },
	})
	pending.OnWork(sched.Wake)
	// New work may have tipped the balance: the leader looks at once, so a
	// burst is spread over the instances while it is booked.
	pending.OnWork(func(cluster.Key) { coord.WeightsChanged() })

	srv, err := metrics.Listen(cfg.MetricsAddr, reg, func() error {
		select {
		case <-replica.Ready():
		default:
			return errors.New("host cache snapshot not loaded")
		}
		if coord.View().Instance == 0 {
			return errors.New("not registered with the other instances")
		}
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("serving metrics", "addr", srv.Addr())

	feeds, stopFeeds := context.WithCancel(context.Background())
	defer stopFeeds()
	coordCtx, stopCoord := context.WithCancel(context.Background())
	defer stopCoord()
	g, gctx := errgroup.WithContext(feeds)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return replica.Run(gctx) })
	if onCounters != nil {
		g.Go(func() error { return cntWriter.Run(gctx) })
	}
	g.Go(func() error { return pending.Run(gctx) })
	if cfg.Feed == "poll" {
		// Work is found by the poller; the listener carries only the limit
		// changes.
		g.Go(func() error { return pending.Poll(gctx, cfg.PollEvery) })
		g.Go(func() error { return listener.Run(gctx) })
	} else {
		g.Go(func() error { return listener.Run(gctx) })
	}
	g.Go(func() error { return launcher.Run(gctx) })
	coordDone := make(chan error, 1)
	go func() { coordDone <- coord.Run(coordCtx) }()
	// Status publishing stops after the loop, before the handover.
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	pubDone := make(chan error, 1)
	go func() { pubDone <- newStatusPublisher(pool, coord, sched, replica, cntWriter, log).Run(pubCtx) }()

	// The loop starts once the cache holds a snapshot: planning against an
	// empty index would only record waits.
	select {
	case <-replica.Ready():
		if opt.OnReady != nil {
			opt.OnReady()
		}
	case <-ctx.Done():
	case <-gctx.Done():
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Run(schedCtx) }()

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
	if failure != nil {
		return failure
	}
	log.Info("stopped")
	return nil
}

// Policy is the placement policy the settings name.
func Policy(cfg config.Config) match.Policy {
	if cfg.Policy == "epvm" {
		return match.NewEPVM(0, 0)
	}
	return match.BestFit{}
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
