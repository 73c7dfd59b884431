package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/ownership"
)

// fakeOwner follows ownership.Coordinator's contract for Changes: the
// channel returned is closed at the next change and replaced by a new one.
type fakeOwner struct {
	mu      sync.Mutex
	changed chan struct{}
	views   int
}

func newFakeOwner() *fakeOwner { return &fakeOwner{changed: make(chan struct{})} }

func (o *fakeOwner) View() ownership.View {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.views++
	return ownership.View{Instance: 1}
}

func (o *fakeOwner) Changes() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

func (o *fakeOwner) change() {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *fakeOwner) viewCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.views
}

func (o *fakeOwner) SetClusters([]cluster.Key)           {}
func (o *fakeOwner) AllowsShow(cluster.Key, string) bool { return true }

// The loop reconciles once per ownership change and then sleeps: a closed
// Changes channel must be taken again after each signal, or every later
// select finds it closed and the loop spins (about 1.5 cores on an idle
// farm).
func TestRunSleepsBetweenOwnershipChanges(t *testing.T) {
	t.Parallel()
	owner := newFakeOwner()
	s := New(Config{}, Deps{Hosts: cache.NewHosts(time.Now, time.Minute), Owner: owner})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitViews := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for owner.viewCount() < n {
			if time.Now().After(deadline) {
				t.Fatalf("ownership view read %d times, want %d", owner.viewCount(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitViews(1) // the reconcile at start
	for i := 2; i <= 4; i++ {
		owner.change()
		waitViews(i)
	}
	// Nothing changes any more: the loop must not read the view again.
	time.Sleep(100 * time.Millisecond)
	if n := owner.viewCount(); n != 4 {
		t.Fatalf("ownership view read %d times after 3 changes, want 4: the loop reconciles without a change", n)
	}
}
