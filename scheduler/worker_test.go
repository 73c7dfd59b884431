package scheduler

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cuesched/cuesched/dispatch"
)

// Rounds that book nothing and only drop back off after the first one,
// doubling up to the max; a round that books, or drops nothing, ends the
// streak.
func TestDropBackoff(t *testing.T) {
	b := dropBackoff{min: 10 * time.Millisecond, max: 50 * time.Millisecond}
	ms := time.Millisecond
	for i, step := range []struct {
		booked, dropped int
		want            time.Duration
	}{
		{0, 3, 0}, {0, 3, 10 * ms}, {0, 1, 20 * ms}, {0, 1, 40 * ms}, {0, 1, 50 * ms}, {0, 1, 50 * ms},
		{1, 1, 0}, // booked: the streak ends
		{0, 1, 0}, {0, 1, 10 * ms},
		{0, 0, 0}, // nothing dropped (nothing placed): the streak ends
		{0, 2, 0},
	} {
		if got := b.next(step.booked, step.dropped); got != step.want {
			t.Fatalf("step %d (booked %d, dropped %d): back-off %v, want %v", i, step.booked, step.dropped, got, step.want)
		}
	}
}

// A cluster whose rounds only drop is not run again by the wakes the drops
// cause (each requeues its layer): after the second such round it waits out
// its back-off however often it is woken.
func TestWorkerHoldsOffRoundsThatOnlyDrop(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler), Workers: 1}, Deps{})
	var rounds atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{s: s, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		drops: dropBackoff{min: time.Hour, max: time.Hour}}
	w.round = func(context.Context) (roundOutcome, error) {
		rounds.Add(1)
		return roundOutcome{dropped: 1, dropReasons: map[dispatch.DropReason]int{dispatch.DropHostBreaker: 1}}, nil
	}
	go w.run(ctx)
	defer w.stop()
	// Each send waits for the worker to take the one before (the channel
	// holds one): when the loop ends, the worker has taken 99 wakes and
	// finished every round they started.
	for range 100 {
		w.wake <- struct{}{}
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d rounds for 100 wakes, want 2 (the first drop-only round is retried at once, then the back-off holds)", n)
	}
}
