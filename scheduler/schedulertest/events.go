package schedulertest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cluster"
)

// Kind is what an Event records.
type Kind string

// What the harness records, in the order the loop does it.
const (
	// Round: a round began, reading its cluster's queued layers. (Tag
	// pressure's demand reads those of every tag-bucket cluster too: a test
	// counting rounds of a tag bucket sees those reads.)
	Round Kind = "round"
	// Frames: a round read the waiting frames of its cluster's queued
	// layers (Key). Only a worker's own round does (tag pressure reads
	// layers, not frames).
	Frames  Kind = "frames"
	Booking Kind = "booking" // a Book call began (N placements)
	Book    Kind = "book"    // a Book call returned (Booked, Dropped, Deferred, Err)
	Hold    Kind = "hold"    // the capacity of N bookings was held
	Resolve Kind = "resolve" // a Resolve call returned (IDs, Err)
	Requeue Kind = "requeue" // a layer was handed back to the queue (Layer)
	View    Kind = "view"    // the loop read ownership's view
	Asleep  Kind = "asleep"  // the clusters asleep changed (N: how many now)
	Log     Kind = "log"     // the loop logged Msg (Info and above)
)

// Event is one thing the loop did to a port.
type Event struct {
	Kind Kind
	Key  cluster.Key // Round, Frames, Booking, Book
	N    int         // Booking: placements; Hold: bookings; Asleep: clusters asleep
	// Booked, Dropped, Deferred and Untried count the placements of a Book
	// call by how they ended.
	Booked, Dropped, Deferred, Untried int
	IDs                                []int32 // Resolve: the clusters
	Layer                              string  // Requeue
	Msg                                string  // Log
	Err                                error   // Book, Resolve
}

func (e Event) String() string {
	var b strings.Builder
	b.WriteString(string(e.Kind))
	switch e.Kind {
	case Round, Frames:
		fmt.Fprintf(&b, " %s", e.Key)
	case Booking, Hold, Asleep:
		fmt.Fprintf(&b, " %d", e.N)
	case Book:
		fmt.Fprintf(&b, " booked=%d dropped=%d deferred=%d untried=%d", e.Booked, e.Dropped, e.Deferred, e.Untried)
	case Resolve:
		fmt.Fprintf(&b, " %v", e.IDs)
	case Requeue:
		fmt.Fprintf(&b, " %s", e.Layer)
	case Log:
		fmt.Fprintf(&b, " %q", e.Msg)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, " err=%v", e.Err)
	}
	return b.String()
}

// recorder keeps the events in order and tells waiters of each new one.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	asleep  int
	changed chan struct{} // closed at the next event
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Kind == Asleep {
		r.asleep += e.N
		e.N = r.asleep
	}
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

// snapshot returns the events so far and a channel closed at the next.
func (r *recorder) snapshot() ([]Event, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[:len(r.events):len(r.events)], r.changed
}

// asleepGauge is the loop's clusters-asleep gauge, recording each move: a
// cluster counted asleep waits for an event and for nothing else.
type asleepGauge struct {
	prometheus.Gauge
	rec *recorder
}

func (g asleepGauge) Add(d float64) {
	g.Gauge.Add(d)
	g.rec.add(Event{Kind: Asleep, N: int(d)})
}

// logHandler records what the loop logs at Info and above.
type logHandler struct{ rec *recorder }

func (h logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	h.rec.add(Event{Kind: Log, Msg: r.Message})
	return nil
}

func (h logHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logHandler) WithGroup(string) slog.Handler      { return h }

// awaitLimit is how long Await waits before it fails the test: only a loop
// that breaks the rule waited for gets near it.
const awaitLimit = 20 * time.Second

// quietFor is how long Quiet watches for events that must not come. A loop
// that breaks the rule (spins, retries, books) does so within microseconds;
// the window only bounds how long the test watches.
const quietFor = 150 * time.Millisecond
