package launch

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

var quiet = slog.New(slog.DiscardHandler)

var testCluster = dispatch.Cluster{ID: 7, Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "local", Alloc: "gen"}}

// newBooker returns a Booker on pool with metrics of its own; its logs are
// discarded unless cfg says where they go.
func newBooker(pool *pgxpool.Pool, cfg dispatch.BookerConfig) *dispatch.Booker {
	reg := prometheus.NewRegistry()
	cfg.Pool, cfg.Metrics, cfg.Scheduler = pool, dispatch.NewMetrics(reg), metrics.NewScheduler(reg)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	return dispatch.NewBooker(cfg)
}

// settledLog collects a launcher's outcomes and lets a test wait for them.
type settledLog struct {
	mu      sync.Mutex
	all     []Settled
	changed chan struct{}
}

func newSettledLog() *settledLog { return &settledLog{changed: make(chan struct{})} }

func (s *settledLog) add(e Settled) {
	s.mu.Lock()
	s.all = append(s.all, e)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// wait returns the outcomes once there are at least n.
func (s *settledLog) wait(ctx context.Context, t testing.TB, n int) []Settled {
	t.Helper()
	for {
		s.mu.Lock()
		all, ch := slices.Clone(s.all), s.changed
		s.mu.Unlock()
		if len(all) >= n {
			return all
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%d of %d bookings settled: %v", len(all), n, ctx.Err())
		}
	}
}

// rqdFarm starts a fake RQD on every host name at one port chosen for all.
func rqdFarm(t testing.TB, names []string, opts fakerqd.Options) (*fakerqd.Farm, int) {
	t.Helper()
	var lastErr error
	for range 20 {
		port := 20000 + rand.IntN(40000)
		addrs := make([]string, len(names))
		for i, n := range names {
			addrs[i] = fmt.Sprintf("%s:%d", n, port)
		}
		farm, err := fakerqd.StartFarm(addrs, opts)
		if err == nil {
			t.Cleanup(farm.Close)
			return farm, port
		}
		lastErr = err
	}
	t.Fatalf("start fake RQD farm: %v", lastErr)
	return nil, 0
}

// runLauncher starts a launcher on the pool and stops it when the test ends.
// testReportGrace is the launchers' ReportGrace in tests that do not test
// it: no completion report here arrives late.
const testReportGrace = 20 * time.Millisecond

func runLauncher(t testing.TB, cfg Config) *Launcher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.ReportGrace == 0 {
		cfg.ReportGrace = testReportGrace
	}
	l := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("launcher: %v", err)
		}
	})
	return l
}

func newRQD(t testing.TB, port int, callTimeout time.Duration) *RQDClient {
	t.Helper()
	c := NewRQDClient(RQDConfig{Port: port, CallTimeout: callTimeout, Logger: quiet})
	t.Cleanup(c.Close)
	return c
}

func seedName(i int) string { return seed.LoopbackName(i) }

func itoa(n int) string { return strconv.Itoa(n) }

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
