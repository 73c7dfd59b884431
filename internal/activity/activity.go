// Package activity is what a running instance says at info level without
// being asked: one summary line per interval while it books (frames booked
// and launched, bookings released, placements dropped, layers waiting by
// reason, clusters owned) and nothing while it is idle; and, instead of a
// line per failed call, one line per failing RQD host per interval with the
// count and the last error.
//
// The parts that see the events count them here (atomic counters on the
// booking path; a map under a short lock for failures, which are rare);
// Run writes the lines.
package activity

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is the summary interval when Config.Interval is zero.
const DefaultInterval = 30 * time.Second

// maxHostLines bounds the failing hosts named one per line in an interval:
// the rest (a network partition can fail hundreds) share one line.
const maxHostLines = 10

// Config configures a Log.
type Config struct {
	Logger   *slog.Logger // nil: slog.Default()
	Interval time.Duration
	Now      func() time.Time // nil: time.Now
	// Tick ends each interval; nil: a ticker of Interval.
	Tick <-chan time.Time
	// Clusters and Waiting are read when a summary is written: the clusters
	// owned and the layers waiting by reason at that moment. nil: left out.
	Clusters func() int
	Waiting  func() map[string]int
}

// Log counts what the instance does and writes it once per interval.
type Log struct {
	cfg Config
	log *slog.Logger

	booked, dropped, launched, released atomic.Int64

	mu      sync.Mutex
	failing map[string]*hostFailures // RQD hosts failing in this interval
	since   time.Time                // start of this interval
}

type hostFailures struct {
	host string
	n    int
	last error
}

// New returns a Log whose first interval starts now.
func New(cfg Config) *Log {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{cfg: cfg, log: cfg.Logger, failing: map[string]*hostFailures{}, since: cfg.Now()}
}

// Attempts counts a round's placements booked and dropped by the re-check.
func (l *Log) Attempts(booked, dropped int) {
	l.booked.Add(int64(booked))
	l.dropped.Add(int64(dropped))
}

// Launched counts a booking RQD runs.
func (l *Log) Launched() { l.launched.Add(1) }

// Released counts a booking undone after its launch failed.
func (l *Log) Released() { l.released.Add(1) }

// Failed counts a failed call to an RQD host.
func (l *Log) Failed(host string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.failing[host]
	if f == nil {
		f = &hostFailures{host: host}
		l.failing[host] = f
	}
	f.n++
	f.last = err
}

// Run writes the lines of each interval as it ends, and those of the last
// one when ctx ends.
func (l *Log) Run(ctx context.Context) error {
	tick := l.cfg.Tick
	if tick == nil {
		t := time.NewTicker(l.cfg.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			l.Flush()
		case <-ctx.Done():
			l.Flush()
			return nil
		}
	}
}

// Flush ends the interval: it writes the summary if the instance booked,
// launched, released or dropped anything in it, and a line per failing
// host, then starts the next interval.
func (l *Log) Flush() {
	l.mu.Lock()
	now := l.cfg.Now()
	over := now.Sub(l.since)
	l.since = now
	failing := slices.Collect(maps.Values(l.failing))
	clear(l.failing)
	l.mu.Unlock()

	booked, dropped := l.booked.Swap(0), l.dropped.Swap(0)
	launched, released := l.launched.Swap(0), l.released.Swap(0)
	failures := 0
	for _, f := range failing {
		failures += f.n
	}
	if booked+dropped+launched+released > 0 {
		attrs := []any{"over", over, "booked", booked, "dropped", dropped, "launched", launched,
			"released", released, "rqd_failures", failures}
		if l.cfg.Clusters != nil {
			attrs = append(attrs, "clusters", l.cfg.Clusters())
		}
		if l.cfg.Waiting != nil {
			attrs = append(attrs, waitingGroup(l.cfg.Waiting()))
		}
		l.log.Info("booking summary", attrs...)
	}

	slices.SortFunc(failing, func(a, b *hostFailures) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.host, b.host))
	})
	for _, f := range failing[:min(len(failing), maxHostLines)] {
		l.log.Warn("rqd host failing", "over", over, "host", f.host, "failures", f.n, "last_err", f.last)
	}
	if rest := failing[min(len(failing), maxHostLines):]; len(rest) > 0 {
		n := 0
		for _, f := range rest {
			n += f.n
		}
		l.log.Warn("more rqd hosts failing", "over", over, "hosts", len(rest), "failures", n)
	}
}

// waitingGroup is the layers waiting by reason, reasons in order, those
// with none left out.
func waitingGroup(byReason map[string]int) slog.Attr {
	var attrs []any
	for _, r := range slices.Sorted(maps.Keys(byReason)) {
		if n := byReason[r]; n > 0 {
			attrs = append(attrs, r, n)
		}
	}
	return slog.Group("layers_waiting", attrs...)
}
