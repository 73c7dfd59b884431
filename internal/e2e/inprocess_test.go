package e2e

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/pgtest"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/scheduler"
)

// startInProcess runs one instance inside the test, wired as `cuesched run
// --dry-run` wires it (cmd/cuesched serve, less the metrics server), for
// what only the process itself knows: the scheduler's commit times, through
// scheduler.Config.OnBooked, and its metrics, which it returns. It stops
// when the test ends.
func startInProcess(t *testing.T, db *pgtest.DB, name string, onBooked func([]dispatch.Booking)) inProcess {
	t.Helper()
	cfg, err := config.Load("run", []string{"--db", db.DSN, "--dry-run", "--instance", name},
		func(string) string { return "" }, nil, &testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pc, err := pgxpool.ParseConfig(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = ownership.AppName(name)
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	buckets, err := scheduler.ReadBuckets(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}

	reg := metrics.NewRegistry()
	sm := metrics.NewScheduler(reg)
	loop := metrics.NewLoop(reg)
	var sched *scheduler.Scheduler
	replica := cache.NewReplica(cache.ReplicaConfig{
		DSN: cfg.DB, Pool: pool, Logger: log, Registerer: reg,
		HostPingMaxAge: cfg.HostPingMaxAge, Counters: cfg.Counters,
		Owns:    func(hostID string) bool { return sched.OwnsHost(hostID) },
		OnHosts: func(grown []match.Host, topology bool) { sched.HostsChanged(grown, topology) },
	})
	queue := cache.NewQueue(pool, log)
	queue.Metrics, queue.Sched = cache.NewQueueMetrics(reg), sm
	listener := cdc.NewListener(cfg.DB, log)
	listener.Handle(cache.WorkChannel, queue.Notify)
	listener.OnConnect(queue.Resync)
	listener.Handle(cache.LimitsChannel, func(string) { replica.LimitsChanged() })
	listener.OnConnect(replica.ReloadLimits)
	coord, err := ownership.New(pool, cfg.DB, ownership.Options{
		Name: cfg.Instance, Lease: cfg.Lease, Weights: queue.Depths, Fenced: dispatch.ErrFenced,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	dm := dispatch.NewMetrics(reg)
	launcher := dispatch.NewLauncher(dispatch.LauncherConfig{
		Pool: pool, Workers: cfg.LaunchWorkers, DryRun: true, Metrics: dm, Logger: log,
		OnSettled: func(s dispatch.Settled) { sched.Settled(s) },
	})
	sched = scheduler.New(scheduler.Config{
		Policy: match.BestFit{}, Order: match.OrderLottery, Workers: cfg.Workers, Logger: log, Metrics: sm,
		Loop: loop, OnBooked: onBooked,
	}, scheduler.Deps{
		Pool: pool, Hosts: replica.Hosts(), Caps: replica.Usage(), Queue: queue,
		Booker: dispatch.NewBooker(dispatch.BookerConfig{
			Pool: pool, Fence: coord, BatchMin: cfg.BatchMin, BatchMax: cfg.BatchMax, DryRun: true,
			Launcher: launcher, Metrics: dm, Scheduler: sm, Logger: log,
		}),
		Launcher: launcher, Owner: coord, Booked: replica.Booked, Buckets: buckets,
	})
	queue.OnWork(sched.Wake)

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return replica.Run(gctx) })
	g.Go(func() error { return queue.Run(gctx) })
	g.Go(func() error { return listener.Run(gctx) })
	g.Go(func() error { return launcher.Run(gctx) })
	g.Go(func() error { return coord.Run(gctx) })
	g.Go(func() error {
		select {
		case <-replica.Ready():
		case <-gctx.Done():
			return nil
		}
		return sched.Run(gctx)
	})
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("in-process instance %s: %v", name, err)
		}
		pool.Close()
	})
	select {
	case <-replica.Ready():
	case <-gctx.Done():
		t.Fatalf("in-process instance %s stopped before its snapshot: %v", name, g.Wait())
	case <-time.After(time.Minute):
		t.Fatalf("in-process instance %s: no snapshot within a minute", name)
	}
	return inProcess{loop: loop, dispatch: dm}
}

// inProcess is the metrics of an instance run in the test.
type inProcess struct {
	loop     *metrics.Loop
	dispatch *dispatch.Metrics
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
