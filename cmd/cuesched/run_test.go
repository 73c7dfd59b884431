package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/launch"
)

// syncBuffer is an io.Writer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor checks cond until it holds or the deadline passes. Across the
// process boundary of `cuesched run` the database is the only signal.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		<-tick.C
	}
}

// One instance of `cuesched run --dry-run` books the whole stress farm
// (seed.SuiteStress), then stops on its context (SIGTERM) with status 0; the
// audit is clean. The instance runs in-process: under -race, this is where
// the whole instance runs under the race detector.
func TestRunBooksPeerStressFarm(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	farm := seed.SuiteStress(5)
	total := farm.FrameCount()
	if _, err := seed.Load(t.Context(), db.Pool, farm, 5); err != nil {
		t.Fatal(err)
	}
	run := startRun(t, db, "--log-level", "debug", "--audit-interval", "1s")
	waiting := func() int {
		var n int
		if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame WHERE str_state = 'WAITING'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, 2*time.Minute, "every frame booked", func() bool {
		run.alive(t)
		return waiting() == 0
	})
	// The instance audits itself every --audit-interval (cuesched_audit_findings):
	// once the counters have caught up, nothing illegal.
	waitFor(t, time.Minute, "the instance's audit finding nothing illegal", func() bool {
		run.alive(t)
		return regexp.MustCompile(`msg="invariant audit" findings=0 illegal=0`).MatchString(run.out.String())
	})
	run.stop(t)
	var running int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if running != total {
		t.Errorf("%d frames RUNNING, want %d", running, total)
	}
	// Unasked, its summary lines (the last written when it stops) count
	// every frame it booked.
	booked := 0
	for _, m := range regexp.MustCompile(`level=INFO msg="booking summary" .*\bbooked=(\d+)`).FindAllStringSubmatch(run.out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		booked += n
	}
	if booked != total {
		t.Errorf("the booking summaries count %d frames booked, want %d", booked, total)
	}
	audittest.Clean(t, db.Pool)
}

// runProcess is `cuesched run --dry-run --instance solo` run in-process by
// realMain, as the binary would run it.
type runProcess struct {
	out    syncBuffer
	done   chan int
	cancel context.CancelFunc
}

// startRun starts it on db with extra flags; its output is logged if the
// test fails, and it is stopped when the test ends.
func startRun(t *testing.T, db *pgtest.DB, extra ...string) *runProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runProcess{done: make(chan int, 1), cancel: cancel}
	args := append([]string{"run", "--db", db.DSN, "--dry-run", "--metrics-addr", "127.0.0.1:0", "--instance", "solo"},
		extra...)
	go func() {
		r.done <- realMain(ctx, args, &environment{stdout: &r.out, stderr: &r.out, getenv: func(string) string { return "" }})
	}()
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("cuesched run output:\n%s", r.out.String())
		}
	})
	return r
}

// alive fails the test if the process has exited.
func (r *runProcess) alive(t *testing.T) {
	t.Helper()
	select {
	case code := <-r.done:
		t.Fatalf("cuesched run exited %d early:\n%s", code, r.out.String())
	default:
	}
}

// stop cancels it and requires exit status 0 within a minute.
func (r *runProcess) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		if code != 0 {
			t.Fatalf("cuesched run exited %d on stop:\n%s", code, r.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("cuesched run did not stop:\n%s", r.out.String())
	}
}

// The report-grace setting's default is the launcher's own (config cannot
// import launch, so the figure is written twice).
func TestReportGraceDefaultIsTheLaunchers(t *testing.T) {
	t.Parallel()
	if got := config.Default().ReportGrace; got != launch.DefaultReportGrace {
		t.Errorf("report-grace defaults to %s, the launcher to %s", got, launch.DefaultReportGrace)
	}
}
