package audit_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/internal/audit"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// findings reads cuesched_audit_findings by "check/kind" from reg.
func findings(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cuesched_audit_findings" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var check, kind string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "check":
					check = l.GetValue()
				case "kind":
					kind = l.GetValue()
				}
			}
			out[check+"/"+kind] = m.GetGauge().GetValue()
		}
	}
	return out
}

// The exporter counts each run's findings by check and kind, every check's
// series written (zero included), and logs once when illegal state appears.
func TestExporterCountsFindingsByCheckAndKind(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	exec(t, db, `UPDATE host SET int_cores_idle = int_cores_idle - 100 WHERE pk_host = $1`, s.Hosts["b"])
	exec(t, db, `UPDATE limit_record SET int_max_value = 2 WHERE pk_limit_record = $1`, s.Limits["lic"])
	reg := prometheus.NewRegistry()
	var logs lockedBuffer
	e := audit.NewExporter(db.Pool, audit.Options{}, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(time.Minute)
	var got map[string]float64
	for got = findings(t, reg); got["host-reserved/illegal"] != 1; got = findings(t, reg) {
		if time.Now().After(deadline) {
			t.Fatalf("no host-reserved finding exported within a minute: %v", got)
		}
		time.Sleep(10 * time.Millisecond) // polling the registry: the exporter signals nothing else
	}
	if got["cap-limit/left-legal"] != 1 || got["cap-limit/illegal"] != 0 || got["counter-job/illegal"] != 0 {
		t.Errorf("exported %v, want cap-limit left legal and the counters at 0", got)
	}
	// Runs after the first warn no more while the count stays: wait for
	// three runs (a debug line each).
	for strings.Count(logs.String(), `msg="invariant audit"`) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 runs logged within a minute:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "found illegal state"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
}
