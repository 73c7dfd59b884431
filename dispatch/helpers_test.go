package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

var quiet = slog.New(slog.DiscardHandler)

type testBooker struct {
	*Booker
	reg   *prometheus.Registry
	sched *metrics.Scheduler
	m     *Metrics
}

func newTestBooker(pool *pgxpool.Pool, cfg BookerConfig) *testBooker {
	reg := prometheus.NewRegistry()
	tb := &testBooker{reg: reg, sched: metrics.NewScheduler(reg), m: cfg.Metrics}
	if tb.m == nil {
		tb.m = NewMetrics(reg)
	}
	cfg.Pool, cfg.Metrics, cfg.Scheduler, cfg.Logger = pool, tb.m, tb.sched, quiet
	tb.Booker = NewBooker(cfg)
	return tb
}

// recordingLauncher records what a Booker hands its launcher.
type recordingLauncher struct {
	mu        sync.Mutex
	submitted []Booking
}

func (l *recordingLauncher) Submit(bs []Booking) {
	l.mu.Lock()
	l.submitted = append(l.submitted, bs...)
	l.mu.Unlock()
}

// ResolveLater: no batch of these tests has an unknown commit outcome.
func (l *recordingLauncher) ResolveLater(int32) {}

// placedFarm loads farm into a fresh database and places its frames first
// fit, failing unless want are placed; the context ends in a minute.
func placedFarm(t *testing.T, farm *seed.Farm, want int) (*booktest.Seeded, context.Context, []match.Placement) {
	t.Helper()
	db := booktest.LoadFarm(t, farm)
	ctx := ctxFor(t, time.Minute)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	if len(ps) != want {
		t.Fatalf("%d placements, want %d", len(ps), want)
	}
	return db, ctx, ps
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func histogramCount(t testing.TB, h prometheus.Metric) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
