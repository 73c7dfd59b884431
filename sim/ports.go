package sim

import (
	"context"
	"slices"
	"strconv"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
	"github.com/cuesched/cuesched/scheduler"
)

// The loop's ports (scheduler.Deps) kept in memory by the simulation. The
// host index is package cache's own (fed by SetHost, not the stream); the
// queue, caps, booker and ownership are here. Everything runs on the
// simulation's one goroutine.

// queue is scheduler.Queue over the simulation's layers.
type queue struct {
	r       *run
	byKey   map[cluster.Key]map[int32]struct{}
	applied chan struct{}
	changed bool // a read to apply: Applied is closed at the end of the step
}

func (q *queue) add(li int32) {
	l := &q.r.layers[li]
	for _, k := range l.keys {
		m := q.byKey[k]
		if m == nil {
			m = map[int32]struct{}{}
			q.byKey[k] = m
		}
		m[li] = struct{}{}
		q.r.sched.Wake(k)
	}
	q.changed = true
}

// apply closes Applied when the queue changed during a step of the
// simulation (the real queue applies its reads in batches likewise).
func (q *queue) apply() {
	if q.changed {
		close(q.applied)
		q.applied = make(chan struct{})
		q.changed = false
	}
}

func layerID(li int32) string { return "L" + strconv.Itoa(int(li)) }

func layerIndex(id string) int32 {
	n, _ := strconv.Atoi(id[1:])
	return int32(n)
}

func frameIndex(id string) int32 {
	n, _ := strconv.Atoi(id)
	return int32(n)
}

// Layers implements scheduler.Queue: highest priority first, then the
// order the layers came in.
func (q *queue) Layers(key cluster.Key) []*match.Layer {
	m := q.byKey[key]
	idx := make([]int32, 0, len(m))
	for li := range m {
		idx = append(idx, li)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		pa, pb := q.r.layers[a].tmpl.Priority, q.r.layers[b].tmpl.Priority
		if pa != pb {
			return int(pb - pa)
		}
		return int(a - b)
	})
	out := make([]*match.Layer, len(idx))
	for i, li := range idx {
		l := q.r.layers[li].tmpl
		l.Waiting = int64(len(q.r.layers[li].waiting))
		l.Runs = q.r.runs(li)
		out[i] = &l
	}
	return out
}

// Frames implements scheduler.Queue: the first waiting frames in dispatch
// order.
func (q *queue) Frames(_ context.Context, layers []*match.Layer, limit int) error {
	total := 0
	for _, l := range layers {
		total += q.take(l, limit)
	}
	// One array for the round's frames: a round reads many layers.
	slab := make([]match.Frame, 0, total)
	for _, l := range layers {
		w := q.r.layers[layerIndex(l.ID)].waiting
		start := len(slab)
		for _, fi := range w[:q.take(l, limit)] {
			f := &q.r.frames[fi]
			slab = append(slab, match.Frame{ID: q.r.frameID(fi), Name: l.Name, Version: f.version,
				Number: int64(fi - q.r.layers[f.layer].first)})
		}
		l.Frames = slab[start:len(slab):len(slab)]
	}
	return nil
}

// take is how many waiting frames of l a read of up to limit gives.
func (q *queue) take(l *match.Layer, limit int) int {
	n := len(q.r.layers[layerIndex(l.ID)].waiting)
	if limit > 0 {
		n = min(n, limit)
	}
	return n
}

// Drained implements scheduler.Queue.
func (q *queue) Drained(layerID string) {
	li := layerIndex(layerID)
	if len(q.r.layers[li].waiting) > 0 {
		return
	}
	for _, k := range q.r.layers[li].keys {
		delete(q.byKey[k], li)
	}
}

// Requeue implements scheduler.Queue: the layers are read again, waking
// their clusters.
func (q *queue) Requeue(layerIDs ...string) {
	for _, id := range layerIDs {
		li := layerIndex(id)
		if len(q.r.layers[li].waiting) > 0 {
			q.add(li)
		}
	}
}

// Clusters implements scheduler.Queue.
func (q *queue) Clusters() []cluster.Key {
	out := make([]cluster.Key, 0, len(q.byKey))
	for k, m := range q.byKey {
		if len(m) > 0 {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b cluster.Key) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	return out
}

// Applied implements scheduler.Queue.
func (q *queue) Applied() <-chan struct{} { return q.applied }

// subKey names a subscription.
type subKey struct{ show, alloc string }

// caps is match.Caps over the simulation's counters: subscriptions and job
// caps (no folder caps, no limits).
type caps struct {
	subs map[subKey]match.Subscription
	jobs map[string]match.Cap
}

func (c *caps) Subscription(showID, allocID string) (match.Subscription, bool) {
	s, ok := c.subs[subKey{showID, allocID}]
	return s, ok
}

func (c *caps) Job(jobID string) match.Cap {
	if j, ok := c.jobs[jobID]; ok {
		return j
	}
	return match.Cap{MaxCores: match.NoMax, MaxGPUs: match.NoMax}
}

func (c *caps) Folder(string) match.Cap { return match.Cap{MaxCores: -1, MaxGPUs: -1} }

func (c *caps) Limit(string) (match.Limit, bool) { return match.Limit{}, false }

// count moves the counters a proc of size holds by sign (1 booked, -1
// released).
func (c *caps) count(show, alloc, job string, size match.Resources, sign int64) {
	k := subKey{show, alloc}
	if s, ok := c.subs[k]; ok {
		s.Cores += sign * size.Cores
		s.GPUs += sign * size.GPUs
		c.subs[k] = s
	}
	j := c.Job(job)
	j.Cores += sign * size.Cores
	j.GPUs += sign * size.GPUs
	c.jobs[job] = j
}

// booker is scheduler.Booker: it re-checks each placement as dispatch's
// guarded transaction does (the frame WAITING at the version read, the
// host's idle capacity, the subscription's burst and the job's cap, with
// match's rules) and books what passes in memory.
type booker struct{ r *run }

// BatchSize implements scheduler.Booker: dispatch's largest batch.
func (b booker) BatchSize(int32) int { return 500 }

// Book implements scheduler.Booker.
func (b booker) Book(_ context.Context, c dispatch.Cluster, ps []match.Placement) (dispatch.BatchResult, error) {
	var res dispatch.BatchResult
	r := b.r
	for _, p := range ps {
		fi := frameIndex(p.Frame.ID)
		f := &r.frames[fi]
		l := &r.layers[f.layer]
		h := &r.hosts[r.hostIndex[p.Host.ID]]
		sub, found := r.caps.Subscription(p.Layer.ShowID, p.Host.Alloc)
		var reason dispatch.DropReason
		switch {
		case f.state != frameWaiting || f.version != p.Frame.Version:
			reason = dispatch.DropFrameChanged
		case !h.idle.Covers(p.Size):
			reason = dispatch.DropHostCapacity
		case !found:
			reason = dispatch.DropNoSubscription
		case !match.BurstAllows(sub, found, p.Size.Cores):
			reason = dispatch.DropBurst
		case !match.JobAllows(r.caps.Job(l.tmpl.JobID), p.Size):
			reason = dispatch.DropJobCap
		}
		if reason != "" {
			res.Dropped = append(res.Dropped, dispatch.Drop{Placement: p, Reason: reason})
			continue
		}
		r.start(fi, h, p)
		res.Booked = append(res.Booked, dispatch.Booking{Placement: p, ProcID: p.Frame.ID, ClusterID: c.ID,
			HostName: p.Host.Name, Version: f.version, ShowName: p.Layer.ShowName, CommitAt: r.now()})
	}
	return res, nil
}

// running is match.Running over the simulation's hosts and the frames
// running on each, each expected to run its layer's expected run.
type running struct{ r *run }

// Running implements scheduler.Running: one planning reads it all in
// memory.
func (p running) Running(context.Context) scheduler.RunningRead { return p }

// Err implements scheduler.RunningRead: nothing fails.
func (running) Err() error { return nil }

func (p running) AllHosts(facility, tag string, visit func(match.Host) bool) {
	for hi := range p.r.hosts {
		h := &p.r.hosts[hi].h
		if h.Facility == facility && slices.Contains(h.Tags, tag) && !visit(p.r.view(int32(hi))) {
			return
		}
	}
}

func (p running) Host(hostID string) (match.Host, bool) {
	hi, ok := p.r.hostIndex[hostID]
	if !ok {
		return match.Host{}, false
	}
	return p.r.view(hi), true
}

func (p running) Procs(hostID string) []match.Proc {
	r := p.r
	h := &r.hosts[r.hostIndex[hostID]]
	out := make([]match.Proc, 0, len(h.procs))
	for _, fi := range h.procs {
		f := &r.frames[fi]
		run, _, _ := r.runs(f.layer).Expected()
		out = append(out, match.Proc{Size: f.size, Started: Start.Add(f.startAt), Run: run})
	}
	return out
}

// owner is scheduler.Ownership for a single instance owning every
// cluster.
type owner struct {
	keys    []cluster.Key
	changes chan struct{} // never closed: ownership never changes
}

func (o *owner) View() ownership.View {
	claims := make(map[cluster.Key]ownership.Claim, len(o.keys))
	for i, k := range o.keys {
		claims[k] = ownership.Claim{ID: int32(i + 1), Key: k, Epoch: 1}
	}
	return ownership.View{Instance: 1, Claims: claims}
}

func (o *owner) Changes() <-chan struct{}                { return o.changes }
func (o *owner) SetClusters(keys []cluster.Key)          { o.keys = slices.Clone(keys) }
func (o *owner) AllowsShow(_ cluster.Key, _ string) bool { return true }
