package dispatch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
)

func batchOf(shows ...string) []match.Placement {
	ps := make([]match.Placement, len(shows))
	for i, s := range shows {
		ps[i] = match.Placement{Layer: &match.Layer{ShowID: s}}
	}
	return ps
}

// blocked reports whether entering with ps waits (it gives up after a
// moment; a wait that long means another booking holds a show of ps).
func blocked(t *testing.T, g *showGate, ps []match.Placement) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	leave, err := g.enter(ctx, ps)
	if err == nil {
		leave()
		return false
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enter: %v, want the deadline", err)
	}
	return true
}

func TestShowGate(t *testing.T) {
	t.Parallel()
	var g showGate
	leave, err := g.enter(context.Background(), batchOf("b", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if !blocked(t, &g, batchOf("c", "b")) {
		t.Error("a batch sharing show b entered while another booking of b ran")
	}
	if blocked(t, &g, batchOf("c", "d")) {
		t.Error("a batch of other shows waited")
	}
	// The batch that gave up let c go again.
	if blocked(t, &g, batchOf("c")) {
		t.Error("show c stayed taken by a batch that gave up waiting")
	}
	leave()
	leave() // once is what counts
	second, err := g.enter(context.Background(), batchOf("a"))
	if err != nil {
		t.Fatal(err)
	}
	if !blocked(t, &g, batchOf("a")) {
		t.Error("leaving twice let two bookings of show a in")
	}
	second()
	if blocked(t, &g, batchOf("a", "b")) {
		t.Error("shows a and b stayed taken after every booking left")
	}
	if blocked(t, &g, []match.Placement{{}}) {
		t.Error("a batch without layers waited")
	}
}
