package scheduler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/queue"
)

// fakeOwner follows ownership.Coordinator's contract for Changes: the
// channel returned is closed at the next change and replaced by a new one.
type fakeOwner struct {
	mu      sync.Mutex
	changed chan struct{}
	views   int
	claims  map[cluster.Key]ownership.Claim
}

func newFakeOwner() *fakeOwner { return &fakeOwner{changed: make(chan struct{})} }

func (o *fakeOwner) View() ownership.View {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.views++
	return ownership.View{Instance: 1, Claims: o.claims}
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

// fakeResolver fails its first calls, then resolves.
type fakeResolver struct {
	mu    sync.Mutex
	fails int
	calls [][]int32
}

func (r *fakeResolver) Resolve(_ context.Context, ids []int32) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, ids)
	if len(r.calls) <= r.fails {
		return 0, errors.New("connection refused")
	}
	return 0, nil
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// A cluster gained while its launch outbox cannot be read (the database
// down at start or takeover) keeps trying until the rows it inherited are
// handed to the launcher, and then stops (issue 11, defect 3: the first
// failure was logged and never retried, leaving committed bookings
// unlaunched).
func TestGainedClusterResolvesItsOutboxUntilDone(t *testing.T) {
	t.Parallel()
	key := cluster.Key{Kind: cluster.KindAlloc, Facility: "local", Alloc: "a1"}
	owner := newFakeOwner()
	owner.claims = map[cluster.Key]ownership.Claim{key: {ID: 7, Key: key, Epoch: 1}}
	res := &fakeResolver{fails: 3}
	s := New(Config{}, Deps{Hosts: cache.NewHosts(time.Now, time.Minute), Owner: owner,
		Queue: queue.New(nil, nil), Launcher: res})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for res.count() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox resolution tried %d times, want it retried until it succeeds (4th try)", res.count())
		}
		time.Sleep(time.Millisecond)
	}
	// Resolved: nothing asks again until something new is unresolved.
	s.Wake(key)
	time.Sleep(100 * time.Millisecond)
	if n := res.count(); n != 4 {
		t.Fatalf("outbox resolution tried %d times, want 4 (done once it succeeded)", n)
	}
	for _, ids := range res.calls {
		if len(ids) != 1 || ids[0] != 7 {
			t.Fatalf("resolved clusters %v, want [7]", ids)
		}
	}
}
