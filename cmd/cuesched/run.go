package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/preflight"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/migrations"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/scheduler"
)

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// connect opens a pool on the configured database and proves it answers,
// with a deadline so an unreachable database fails fast and plainly.
func connect(ctx context.Context, cfg config.Config, app string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DB)
	if err != nil {
		return nil, &config.Error{Setting: "db", Err: fmt.Errorf("%s: %w", config.RedactDSN(cfg.DB), err)}
	}
	pc.ConnConfig.RuntimeParams["application_name"] = app
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(cfg.DB), err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(cfg.DB), err)
	}
	return pool, nil
}

// checkDatabase refuses a Cuebot schema older than V47, a database whose
// cuesched migrations are not all applied, and one logical replication
// cannot serve.
func checkDatabase(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) error {
	if err := preflight.CuebotSchema(ctx, pool); err != nil {
		return err
	}
	st, err := migrations.Get(ctx, cfg.DB)
	if err != nil {
		return err
	}
	if st.Dirty || st.Version != st.Latest {
		return fmt.Errorf("cuesched's migrations are at version %d (dirty %v), this binary needs %d: run `cuesched migrate up --db ...`",
			st.Version, st.Dirty, st.Latest)
	}
	if cfg.Feed == "events" {
		if err := preflight.Replication(ctx, pool, cdc.Publication); err != nil {
			return err
		}
	}
	return nil
}

func policyOf(cfg config.Config) match.Policy {
	if cfg.Policy == "epvm" {
		return match.NewEPVM(0, 0)
	}
	return match.BestFit{}
}

func orderOf(cfg config.Config) match.Order {
	if cfg.Order == "strict" {
		return match.OrderStrict
	}
	return match.OrderLottery
}

func runScheduler(ctx context.Context, env *environment, args []string) error {
	cfg, err := config.Load("run", args, env.getenv, nil, env.stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, env.stderr)
	log.Info("cuesched starting", "version", versionString(), "instance", cfg.Instance,
		"db", config.RedactDSN(cfg.DB), "feed", cfg.Feed, "dry_run", cfg.DryRun)
	pool, err := connect(ctx, cfg, ownership.AppName(cfg.Instance))
	if err != nil {
		return stoppedWhileStarting(ctx, log, err)
	}
	defer pool.Close()
	if err := checkDatabase(ctx, cfg, pool); err != nil {
		return stoppedWhileStarting(ctx, log, err)
	}
	buckets, err := scheduler.ReadBuckets(ctx, pool)
	if err != nil {
		return stoppedWhileStarting(ctx, log, err)
	}
	return serve(ctx, cfg, log, pool, buckets)
}

// stoppedWhileStarting is err, unless the instance was told to stop
// (SIGTERM) while it started: the step failed because it was cut short, and
// a stop is a clean exit whenever it comes.
func stoppedWhileStarting(ctx context.Context, log *slog.Logger, err error) error {
	if ctx.Err() != nil {
		log.Info("stopped while starting", "step", err)
		return nil
	}
	return err
}

// serve runs every part of an instance until ctx ends, then stops them in
// order: the loop first (each cluster finishes or rolls back its batch in
// flight), then ownership (which hands every cluster over at once), then the
// feeds and the launcher.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, buckets int) error {
	reg := metrics.NewRegistry()
	sm := metrics.NewScheduler(reg)

	var sched *scheduler.Scheduler // the cache's callbacks reach it once built
	replica := cache.NewReplica(cache.ReplicaConfig{
		DSN: cfg.DB, Pool: pool, Logger: log, Registerer: reg,
		HostPingMaxAge: cfg.HostPingMaxAge, Counters: cfg.Counters,
		Owns:    func(hostID string) bool { return sched.OwnsHost(hostID) },
		OnHosts: func(grown []match.Host, topology bool) { sched.HostsChanged(grown, topology) },
	})
	queue := cache.NewQueue(pool, log)
	queue.Metrics, queue.Sched = cache.NewQueueMetrics(reg), sm
	listener := cdc.NewListener(cfg.DB, log)
	listener.Metrics = cdc.NewListenMetrics(reg)
	if cfg.Feed == "events" {
		listener.Handle(cache.WorkChannel, queue.Notify)
		listener.OnConnect(queue.Resync)
	}
	listener.Handle(cache.LimitsChannel, func(string) { replica.LimitsChanged() })
	listener.OnConnect(replica.ReloadLimits)

	coord, err := ownership.New(pool, cfg.DB, ownership.Options{
		Name: cfg.Instance, Lease: cfg.Lease,
		Static:  ownership.Static{Facility: cfg.Facility, AllocTags: cfg.AllocTags, ManualTags: cfg.ManualTags},
		Weights: queue.Depths, Fenced: dispatch.ErrFenced, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	var rqd *dispatch.RQDClient
	if !cfg.DryRun {
		rqd = dispatch.NewRQDClient(dispatch.RQDConfig{Port: cfg.RQDPort, CallTimeout: cfg.RQDTimeout, Logger: log})
		defer rqd.Close()
	}
	dm := dispatch.NewMetrics(reg)
	launcher := dispatch.NewLauncher(dispatch.LauncherConfig{
		Pool: pool, RQD: rqd, Workers: cfg.LaunchWorkers, DryRun: cfg.DryRun, Metrics: dm, Logger: log,
		OnSettled: func(s dispatch.Settled) { sched.Settled(s) },
	})
	bcfg := dispatch.BookerConfig{
		Pool: pool, Fence: coord, BatchMin: cfg.BatchMin, BatchMax: cfg.BatchMax, DryRun: cfg.DryRun,
		Launcher: launcher, Metrics: dm, Scheduler: sm, Logger: log,
	}
	if rqd != nil {
		bcfg.HostAllowed = rqd.Allowed
	}
	sched = scheduler.New(scheduler.Config{
		Policy: policyOf(cfg), Order: orderOf(cfg), SelfishServices: cfg.SelfishServices,
		Workers: cfg.Workers, Logger: log, Metrics: sm, Loop: metrics.NewLoop(reg),
	}, scheduler.Deps{
		Pool: pool, Hosts: replica.Hosts(), Caps: replica.Usage(), Queue: queue,
		Booker: dispatch.NewBooker(bcfg), Launcher: launcher, Owner: coord,
		Booked: replica.Booked, Buckets: buckets,
	})
	queue.OnWork(sched.Wake)

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
	g.Go(func() error { return queue.Run(gctx) })
	if cfg.Feed == "poll" {
		// Work is found by the poller; the listener carries only the limit
		// changes.
		g.Go(func() error { return queue.Poll(gctx, cfg.PollEvery) })
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
	go func() { pubDone <- newStatusPublisher(pool, coord, sched, replica, log).Run(pubCtx) }()

	// The loop starts once the cache holds a snapshot: planning against an
	// empty index would only record waits.
	select {
	case <-replica.Ready():
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
