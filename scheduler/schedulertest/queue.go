package schedulertest

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// Queue is an in-memory scheduler.Queue: layers added to a cluster, their
// waiting frames removed as the Booker commits them. Like cache.Queue it
// tells its OnWork listener of new work (Add), of a layer read again
// (Requeue) and of a start-after time that came (Due).
type Queue struct {
	rec *recorder

	mu      sync.Mutex
	layers  map[string]*queued
	onWork  []func(cluster.Key)
	applied chan struct{}
	// failFrames, when above zero, is how many Frames calls fail next.
	failFrames int
}

type queued struct {
	key    cluster.Key
	layer  match.Layer // Frames empty
	frames []match.Frame
}

func newQueue(rec *recorder) *Queue {
	return &Queue{rec: rec, layers: map[string]*queued{}, applied: make(chan struct{})}
}

// OnWork registers fn as cache.Queue.OnWork does.
func (q *Queue) OnWork(fn func(cluster.Key)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onWork = append(q.onWork, fn)
}

// Add queues a layer of the cluster, its Frames the waiting frames (Waiting
// is set from them), and tells the listeners: new work.
func (q *Queue) Add(key cluster.Key, l *match.Layer) {
	e := &queued{key: key, layer: *l, frames: slices.Clone(l.Frames)}
	e.layer.Frames = nil
	e.layer.Waiting = int64(len(e.frames))
	q.mu.Lock()
	q.layers[l.ID] = e
	q.appliedLocked()
	q.mu.Unlock()
	q.work(key)
}

// Due tells the listeners that a start-after time of the cluster's layers
// came, as cache.Queue's timer does.
func (q *Queue) Due(key cluster.Key) { q.work(key) }

// FailFrames makes the next n Frames calls fail.
func (q *Queue) FailFrames(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.failFrames = n
}

// Waiting is the frames of a layer still waiting (not booked).
func (q *Queue) Waiting(layerID string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.layers[layerID]; e != nil {
		return len(e.frames)
	}
	return 0
}

func (q *Queue) work(key cluster.Key) {
	q.mu.Lock()
	fns := slices.Clone(q.onWork)
	q.mu.Unlock()
	for _, fn := range fns {
		fn(key)
	}
}

// appliedLocked closes the Applied channel; q.mu held.
func (q *Queue) appliedLocked() {
	close(q.applied)
	q.applied = make(chan struct{})
}

// Layers implements scheduler.Queue; it records a Round.
func (q *Queue) Layers(key cluster.Key) []*match.Layer {
	q.rec.add(Event{Kind: Round, Key: key})
	q.mu.Lock()
	var out []*match.Layer
	for _, e := range q.layers {
		if e.key == key {
			c := e.layer
			out = append(out, &c)
		}
	}
	q.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.ID < b.ID
	})
	return out
}

// Frames implements scheduler.Queue.
func (q *Queue) Frames(_ context.Context, layers []*match.Layer, limit int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failFrames > 0 {
		q.failFrames--
		return errors.New("frames: connection refused")
	}
	read := false
	for _, l := range layers {
		l.Frames = nil
		if e := q.layers[l.ID]; e != nil {
			if !read {
				q.rec.add(Event{Kind: Frames, Key: e.key})
				read = true
			}
			n := len(e.frames)
			if limit > 0 {
				n = min(n, limit)
			}
			l.Frames = slices.Clone(e.frames[:n])
		}
	}
	return nil
}

// Drained implements scheduler.Queue.
func (q *Queue) Drained(layerID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.layers[layerID]; e != nil && len(e.frames) == 0 {
		delete(q.layers, layerID)
	}
}

// Requeue implements scheduler.Queue: the layers are read again at once,
// waking their clusters.
func (q *Queue) Requeue(layerIDs ...string) {
	var keys []cluster.Key
	q.mu.Lock()
	for _, id := range layerIDs {
		q.rec.add(Event{Kind: Requeue, Layer: id})
		if e := q.layers[id]; e != nil {
			keys = append(keys, e.key)
		}
	}
	q.appliedLocked()
	q.mu.Unlock()
	for _, k := range keys {
		q.work(k)
	}
}

// Clusters implements scheduler.Queue.
func (q *Queue) Clusters() []cluster.Key {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []cluster.Key
	for _, e := range q.layers {
		if !slices.Contains(out, e.key) {
			out = append(out, e.key)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Applied implements scheduler.Queue.
func (q *Queue) Applied() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.applied
}

// booked takes committed frames out of their layers.
func (q *Queue) booked(ps []match.Placement) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, p := range ps {
		if e := q.layers[p.Layer.ID]; e != nil {
			e.frames = slices.DeleteFunc(e.frames, func(f match.Frame) bool { return f.ID == p.Frame.ID })
		}
	}
}
