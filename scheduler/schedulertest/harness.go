// Package schedulertest runs the loop (package scheduler) against in-memory
// parts, after Nomad's scheduler Harness: a Queue and Hosts that hold what a
// test gives them, a Booker scripted per call (book, drop, busy, fence,
// fail, or hold a batch in flight), a Launcher that records what it is asked
// to resolve, and an Owner whose claims the test changes. The Harness wires
// them to the loop as package instance wires the real parts, records every
// call the loop makes to them as an Event, and lets a test wait for the
// events it expects instead of sleeping. RunScenario runs a scenario file
// (package internal/scenario) through the loop and checks its expect lines.
package schedulertest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
	"github.com/cuesched/cuesched/scheduler"
)

// The world every harness starts with: one facility, one allocation (A1,
// tag "general") and a show subscribed to it with room to spare.
const (
	Facility = "local"
	Show     = "show1"
	GB       = 1048576
)

// A1 is the allocation of the world, Alloc1 its cluster.
var (
	A1     = cluster.Alloc{ID: "a1", Facility: Facility, Tag: "general"}
	Alloc1 = cluster.Key{Kind: cluster.KindAlloc, Facility: Facility, Alloc: "a1"}
)

// Setup is what a harness starts from; the zero value is the world above
// with no host.
type Setup struct {
	Hosts  []match.Host
	Allocs []cluster.Alloc // nil: A1
	// Caps are the caps the loop reads and the Booker counts commits in;
	// nil: Show subscribed to every allocation with room to spare.
	Caps *matchtest.Caps
	// Config is the loop's configuration; Logger, Loop and Now are the
	// harness's.
	Config scheduler.Config
	// Running and Reservations are the loop's (reservations); nil: none.
	Running      scheduler.Running
	Reservations scheduler.Reservations
}

// Harness is the loop wired to in-memory parts.
type Harness struct {
	t        testing.TB
	rec      *recorder
	Queue    *Queue
	Hosts    *Hosts
	Caps     *matchtest.Caps
	Booker   *Booker
	Launcher *Launcher
	Owner    *Owner
	Clock    *Clock
	Sched    *scheduler.Scheduler

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

// New builds a harness; Start runs its loop. The loop is stopped when the
// test ends.
func New(t testing.TB, s Setup) *Harness {
	rec := newRecorder()
	allocs := s.Allocs
	if allocs == nil {
		allocs = []cluster.Alloc{A1}
	}
	h := &Harness{t: t, rec: rec, Queue: newQueue(rec), Hosts: newHosts(s.Hosts, allocs),
		Caps: s.Caps, Launcher: &Launcher{rec: rec}, Owner: newOwner(rec),
		Clock: &Clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}}
	if h.Caps == nil {
		h.Caps = matchtest.NewCaps()
		for _, a := range allocs {
			h.Caps.Subs[matchtest.SubKey{Show: Show, Alloc: a.ID}] = match.Subscription{Size: 1 << 20, Burst: 1 << 20}
		}
	}
	h.Booker = &Booker{rec: rec, queue: h.Queue, caps: h.Caps}
	cfg := s.Config
	cfg.Logger = slog.New(logHandler{rec})
	cfg.Loop = metrics.NewLoop(prometheus.NewRegistry())
	cfg.Loop.ClustersAsleep = asleepGauge{Gauge: cfg.Loop.ClustersAsleep, rec: rec}
	cfg.Now = h.Clock.Now
	h.Sched = scheduler.New(cfg, scheduler.Deps{
		Queue: h.Queue, Hosts: h.Hosts, Caps: h.Caps, Booker: h.Booker, Hold: holder{rec},
		Launcher: h.Launcher, Owner: h.Owner, Buckets: 1, Running: s.Running, Reservations: s.Reservations,
	})
	// As package instance wires the events.
	h.Queue.OnWork(h.Sched.Wake)
	t.Cleanup(h.Stop)
	return h
}

// Start runs the loop.
func (h *Harness) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.Sched.Run(ctx) }()
}

// Stop stops the loop (as at shutdown) and waits for Run to return.
func (h *Harness) Stop() {
	h.stopOnce.Do(func() {
		if h.cancel == nil {
			return
		}
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(awaitLimit):
			h.t.Errorf("Run did not return %v after it was stopped\n%s", awaitLimit, h.dump(h.Events()))
		}
	})
}

// Free gives capacity back to a host and tells the loop, as the replica
// does when the stream applies a release.
func (h *Harness) Free(hostID string, r match.Resources) {
	h.Hosts.Return(hostID, r)
	host, _ := h.Hosts.Host(hostID)
	h.Sched.HostsChanged([]match.Host{host}, false)
}

// Events is every event so far, in order.
func (h *Harness) Events() []Event {
	evs, _ := h.rec.snapshot()
	return evs
}

// Mark is the number of events so far: Await and Count take it to look only
// at what comes after.
func (h *Harness) Mark() int { return len(h.Events()) }

// Await waits until cond holds over the events since mark, checking again
// at every new event, and returns them. It fails the test when the loop
// never gets there.
func (h *Harness) Await(mark int, what string, cond func([]Event) bool) []Event {
	h.t.Helper()
	limit := time.NewTimer(awaitLimit)
	defer limit.Stop()
	for {
		evs, next := h.rec.snapshot()
		if cond(evs[mark:]) {
			return evs[mark:]
		}
		select {
		case <-next:
		case <-limit.C:
			h.t.Fatalf("waited %v for %s; events since mark %d:\n%s", awaitLimit, what, mark, h.dump(evs[mark:]))
		}
	}
}

// AwaitN waits for the n-th event of kind since mark and returns the events
// up to it.
func (h *Harness) AwaitN(mark int, kind Kind, n int) []Event {
	h.t.Helper()
	evs := h.Await(mark, fmt.Sprintf("%d %s events", n, kind), func(evs []Event) bool { return Count(evs, kind) >= n })
	for i := range evs {
		if Count(evs[:i+1], kind) == n {
			return evs[:i+1]
		}
	}
	return evs
}

// AwaitAsleep waits until, after mark, every one of n owned clusters sleeps
// until an event wakes it (no retry due).
func (h *Harness) AwaitAsleep(mark, n int) []Event {
	h.t.Helper()
	return h.Await(mark, fmt.Sprintf("%d clusters asleep", n), func(evs []Event) bool {
		for _, e := range evs {
			if e.Kind == Asleep && e.N == n {
				return true
			}
		}
		return false
	})
}

// Quiet checks that no event of the kinds comes for a while after mark (the
// loop sleeps): a loop breaking the rule would record one within
// microseconds.
func (h *Harness) Quiet(mark int, kinds ...Kind) {
	h.t.Helper()
	time.Sleep(quietFor)
	evs := h.Events()[mark:]
	for _, k := range kinds {
		if n := Count(evs, k); n > 0 {
			h.t.Fatalf("%d %s events after mark %d, want none (the loop should sleep):\n%s", n, k, mark, h.dump(evs))
		}
	}
}

// Count is the events of kind among evs.
func Count(evs []Event, kind Kind) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// Logged reports whether evs hold a log message starting with prefix.
func Logged(evs []Event, prefix string) bool {
	for _, e := range evs {
		if e.Kind == Log && strings.HasPrefix(e.Msg, prefix) {
			return true
		}
	}
	return false
}

func (h *Harness) dump(evs []Event) string {
	var b strings.Builder
	for i, e := range evs {
		fmt.Fprintf(&b, "  %3d %s\n", i, e)
	}
	return b.String()
}

// holder records each hold of booked capacity (scheduler.Holder).
type holder struct{ rec *recorder }

func (h holder) Hold(br dispatch.BatchResult) { h.rec.add(Event{Kind: Hold, N: len(br.Booked)}) }

// Clock is the loop's clock (Config.Now), moved by the test.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now is the time now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Host is a host of allocation a (tagged with its tag) with cores whole
// cores and 64 GB, all idle.
func Host(id string, a cluster.Alloc, cores int64) match.Host {
	r := match.Resources{Cores: cores * 100, Mem: 64 * GB}
	return match.Host{ID: id, Name: id, Facility: a.Facility, Alloc: a.ID, OS: "linux", Tags: []string{a.Tag},
		Total: r, Idle: r, MemFree: 64 * GB, TempFree: 10 * GB, TempTotal: 10 * GB}
}

// Layer is a layer of Show for allocation a's tag with frames waiting
// frames of one core and 1 GB each.
func Layer(id string, a cluster.Alloc, frames int) *match.Layer {
	l := &match.Layer{ID: id, Name: id, JobID: "job-" + id, JobName: "job-" + id, ShowID: Show,
		ShowName: Show, FolderID: "folder", DeptID: "dept", Facility: a.Facility, Priority: 1,
		Tags: []string{a.Tag}, Min: match.Resources{Cores: 100, Mem: GB}}
	for i := range frames {
		l.Frames = append(l.Frames, match.Frame{ID: fmt.Sprintf("%s/%d", id, i), Name: fmt.Sprintf("%04d-%s", i, id),
			Number: int64(i)})
	}
	return l
}
