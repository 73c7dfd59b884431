package scheduler

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cuesched/cuesched/dispatch"
)

// A stepped cluster follows the worker's rules: rounds that only drop are
// held off after the second however often it is woken, the back-off's
// retry runs the next round, and a round asking nothing sleeps until
// woken.
func TestSteppedHoldsOffRoundsThatOnlyDrop(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler)}, Deps{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker{s: s, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), ctx: ctx,
		drops: dropBackoff{min: time.Minute, max: time.Hour}}
	rounds, drop := 0, true
	w.round = func(context.Context) (roundOutcome, error) {
		rounds++
		if !drop {
			return roundOutcome{}, nil
		}
		return roundOutcome{dropped: 1, dropReasons: map[dispatch.DropReason]int{dispatch.DropHostBreaker: 1}}, nil
	}
	c := &Stepped{w: w}
	var retry time.Duration
	for range 100 {
		signal(w.wake)
		if ran, d := c.Woken(); ran {
			retry = d
		}
	}
	if rounds != 2 || retry != time.Minute {
		t.Fatalf("%d rounds for 100 wakes, retry %v; want 2 (the first drop-only round is run again at once, "+
			"then the back-off holds) and a retry after the back-off's minute", rounds, retry)
	}
	drop = false
	if d := c.Due(); rounds != 3 || d != 0 {
		t.Fatalf("the back-off's retry: %d rounds, retry %v; want a third round asking no retry", rounds, d)
	}
	if ran, _ := c.Woken(); ran {
		t.Fatal("a round ran unwoken")
	}
	signal(w.wake)
	if ran, d := c.Woken(); !ran || d != 0 || rounds != 4 {
		t.Fatalf("woken after the back-off: ran %v, retry %v, %d rounds; want a fourth round", ran, d, rounds)
	}
}
