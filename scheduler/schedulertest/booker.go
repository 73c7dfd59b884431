package schedulertest

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
	"github.com/cuesched/cuesched/ownership"
)

// Action is what the scripted Booker does with a Book call.
type Action int

const (
	Commit Action = iota // book every placement
	Drop                 // drop every placement (Step.Reason)
	Busy                 // another transaction holds the cluster: defer them all
	Fence                // ownership moved: dispatch.ErrFenced, all deferred
	Fail                 // the batch failed (Step.Err): all deferred
	// Wait: the batch waits for the instance's other batches sharing its
	// rows (dispatch's gate) until Step.Gate is closed, then commits; if
	// the cluster is left first (dispatch.Cluster.Leaving), it never
	// begins: all untried.
	Wait
)

// Step scripts one Book call.
type Step struct {
	Do     Action
	Reason dispatch.DropReason // Drop; default host-breaker
	Err    error               // Fail; default a connection error
	// Gate, when set, holds the call (a batch in flight) until it is closed;
	// a call whose context ends first rolls back: all deferred, ctx's error.
	Gate <-chan struct{}
}

// Booker is a scripted scheduler.Booker: each Book call takes the next Step
// (Commit once the script is done). What it commits leaves the Queue and
// counts in the Caps, as the counters a commit raises do.
type Booker struct {
	rec   *recorder
	queue *Queue
	caps  *matchtest.Caps

	mu        sync.Mutex
	batch     int
	script    []Step
	committed []match.Placement
}

// Committed is every placement committed so far, in order.
func (b *Booker) Committed() []match.Placement {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.committed)
}

// Batch sets BatchSize (0: 500, as large as a real batch gets).
func (b *Booker) Batch(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batch = n
}

// Script appends steps for the next Book calls.
func (b *Booker) Script(steps ...Step) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.script = append(b.script, steps...)
}

// BatchSize implements scheduler.Booker.
func (b *Booker) BatchSize(int32) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batch <= 0 {
		return 500
	}
	return b.batch
}

func (b *Booker) next() Step {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.script) == 0 {
		return Step{Do: Commit}
	}
	s := b.script[0]
	b.script = b.script[1:]
	return s
}

// Book implements scheduler.Booker.
func (b *Booker) Book(ctx context.Context, c dispatch.Cluster, ps []match.Placement) (dispatch.BatchResult, error) {
	step := b.next()
	b.rec.add(Event{Kind: Booking, Key: c.Key, N: len(ps)})
	res, err := b.do(ctx, step, c, ps)
	b.rec.add(Event{Kind: Book, Key: c.Key, Booked: len(res.Booked), Dropped: len(res.Dropped),
		Deferred: len(res.Deferred), Untried: len(res.Untried), Err: err})
	return res, err
}

func (b *Booker) do(ctx context.Context, step Step, c dispatch.Cluster, ps []match.Placement) (dispatch.BatchResult, error) {
	var res dispatch.BatchResult
	if step.Gate != nil || step.Do == Wait {
		var leaving <-chan struct{} // nil: only a batch waiting to begin gives up
		if step.Do == Wait {
			leaving = c.Leaving
		}
		select {
		case <-step.Gate:
		case <-leaving:
			res.Untried = ps
			return res, nil
		case <-ctx.Done():
			res.Deferred = ps
			return res, ctx.Err()
		}
	}
	switch step.Do {
	case Drop:
		reason := step.Reason
		if reason == "" {
			reason = dispatch.DropHostBreaker
		}
		for _, p := range ps {
			res.Dropped = append(res.Dropped, dispatch.Drop{Placement: p, Reason: reason})
		}
	case Busy:
		res.Busy, res.Deferred = true, ps
	case Fence:
		res.Deferred = ps
		return res, dispatch.ErrFenced
	case Fail:
		res.Deferred = ps
		if step.Err == nil {
			return res, errors.New("book: connection refused")
		}
		return res, step.Err
	default:
		for _, p := range ps {
			res.Booked = append(res.Booked, dispatch.Booking{Placement: p, ProcID: "proc-" + p.Frame.ID,
				ClusterID: c.ID, HostName: p.Host.Name, Version: p.Frame.Version + 1})
		}
		b.queue.booked(ps)
		for _, p := range ps {
			b.caps.Apply(p)
		}
		b.mu.Lock()
		b.committed = append(b.committed, ps...)
		b.mu.Unlock()
	}
	return res, nil
}

// Launcher is a scheduler.Resolver that records each call and fails the
// first ones it is told to.
type Launcher struct {
	rec *recorder

	mu    sync.Mutex
	fails int
}

// FailResolves makes the next n Resolve calls fail.
func (l *Launcher) FailResolves(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fails = n
}

// Resolve implements scheduler.Resolver.
func (l *Launcher) Resolve(_ context.Context, ids []int32) (int, error) {
	l.mu.Lock()
	var err error
	if l.fails > 0 {
		l.fails--
		err = errors.New("read launch outbox: connection refused")
	}
	l.mu.Unlock()
	l.rec.add(Event{Kind: Resolve, IDs: append([]int32(nil), ids...), Err: err})
	return 0, err
}

// Owner is a scheduler.Ownership whose claims a test changes. Like
// ownership.Coordinator, Changes returns a channel closed at the next change.
type Owner struct {
	rec *recorder

	mu       sync.Mutex
	changed  chan struct{}
	claims   map[cluster.Key]ownership.Claim
	denied   map[string]bool // show names no cluster allows
	clusters []cluster.Key
}

func newOwner(rec *recorder) *Owner {
	return &Owner{rec: rec, changed: make(chan struct{}), claims: map[cluster.Key]ownership.Claim{},
		denied: map[string]bool{}}
}

// Claim makes this instance own the clusters (id: the order given, from 1,
// epoch 1) and nothing else, and signals the change.
func (o *Owner) Claim(keys ...cluster.Key) {
	claims := map[cluster.Key]ownership.Claim{}
	for i, k := range keys {
		claims[k] = ownership.Claim{ID: int32(i + 1), Key: k, Epoch: 1}
	}
	o.Set(claims)
}

// Set replaces the claims and signals the change.
func (o *Owner) Set(claims map[cluster.Key]ownership.Claim) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.claims = claims
	close(o.changed)
	o.changed = make(chan struct{})
}

// Deny makes AllowsShow refuse a show (by name) everywhere.
func (o *Owner) Deny(show string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.denied[show] = true
}

// Clusters is what SetClusters was last given.
func (o *Owner) Clusters() []cluster.Key {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.clusters
}

// View implements scheduler.Ownership.
func (o *Owner) View() ownership.View {
	o.rec.add(Event{Kind: View})
	o.mu.Lock()
	defer o.mu.Unlock()
	claims := make(map[cluster.Key]ownership.Claim, len(o.claims))
	for k, c := range o.claims {
		claims[k] = c
	}
	return ownership.View{Instance: 1, Claims: claims}
}

// Changes implements scheduler.Ownership.
func (o *Owner) Changes() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// SetClusters implements scheduler.Ownership.
func (o *Owner) SetClusters(keys []cluster.Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clusters = keys
}

// AllowsShow implements scheduler.Ownership.
func (o *Owner) AllowsShow(_ cluster.Key, show string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.denied[show]
}
