package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/instance"
	"github.com/cuesched/cuesched/ownership"
)

// The demo runs each cuesched instance as a process of its own (this binary
// started again with these variables set), so one can be killed with SIGKILL
// as a crash would kill it. Only the demo sets them.
const (
	envChild   = "CUESCHED_DEMO_INSTANCE" // the instance's name
	envDSN     = "CUESCHED_DEMO_DSN"
	envMetrics = "CUESCHED_DEMO_METRICS"
)

// runChild is one instance of the demo: `cuesched run` on the demo's
// database, which also writes a line to out for every booking it commits
// ("b <commit unix ns> <job id>"), so the demo sees bookings as they commit,
// on this machine's clock, and measures time to book as DESIGN.md defines
// it.
func runChild(ctx context.Context, name string, out, errw io.Writer, getenv func(string) string) error {
	cfg := config.Default()
	cfg.DB, cfg.Instance, cfg.MetricsAddr, cfg.RQDPort = getenv(envDSN), name, getenv(envMetrics), demoPort
	// The demo's Cuebot stand-in records a completion within milliseconds of
	// its report: a killed instance's inherited launches need not wait longer.
	cfg.ReportGrace = 3 * time.Second
	if cfg.DB == "" || cfg.MetricsAddr == "" {
		return errors.New("the demo's instance mode needs " + envDSN + " and " + envMetrics + " (cuesched-demo sets them)")
	}
	log := slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := connectInstance(ctx, cfg.DB, ownership.AppName(name))
	if err != nil {
		return err
	}
	defer pool.Close()
	w := &bookingWriter{w: bufio.NewWriter(out)}
	return instance.Run(ctx, cfg, log, pool, instance.Options{OnBooked: w.booked})
}

// bookingWriter writes the bookings of each batch as it commits.
type bookingWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (b *bookingWriter) booked(bs []dispatch.Booking) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bk := range bs {
		b.w.WriteString(formatBooking(bk.CommitAt, bk.Layer.JobID))
	}
	// A write error means the demo is gone; the instance stops with it.
	_ = b.w.Flush()
}

func formatBooking(at time.Time, job string) string {
	return "b " + strconv.FormatInt(at.UnixNano(), 10) + " " + job + "\n"
}

// parseBooking reads a line formatBooking wrote.
func parseBooking(line string) (at time.Time, job string, err error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "b" {
		return at, "", fmt.Errorf("not a booking line: %q", line)
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return at, "", fmt.Errorf("booking line %q: %w", line, err)
	}
	return time.Unix(0, ns), f[2], nil
}
