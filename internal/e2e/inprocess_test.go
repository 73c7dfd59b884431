package e2e

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/config"
	cuesched "github.com/cuesched/cuesched/internal/instance"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/ownership"
)

// startInProcess runs one instance inside the test, with the wiring of
// `cuesched run --dry-run` (package instance), for what only the process
// itself knows: the scheduler's commit times, through onBooked, and its
// metrics, in the registry it returns. It stops when the test ends.
func startInProcess(t *testing.T, db *pgtest.DB, name string, onBooked func([]dispatch.Booking)) *prometheus.Registry {
	t.Helper()
	cfg, err := config.Load("run", []string{"--db", db.DSN, "--dry-run", "--instance", name,
		"--metrics-addr", "127.0.0.1:0"}, func(string) string { return "" }, nil, &testWriter{t})
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
	reg := metrics.NewRegistry()
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cuesched.Run(ctx, cfg, log, pool, cuesched.Options{
			Registry: reg, OnBooked: onBooked, OnReady: func() { close(ready) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("in-process instance %s: %v", name, err)
		}
		pool.Close()
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("in-process instance %s stopped before its snapshot: %v", name, err)
	case <-time.After(time.Minute):
		t.Fatalf("in-process instance %s: no snapshot within a minute", name)
	}
	return reg
}

// metricValue is the value of the series of a counter or gauge family with
// the given label values (name=value pairs); 0 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, family string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
