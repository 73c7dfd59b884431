package cache

import (
	"cmp"
	"slices"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// Locality's memory (match/locality.go): each host remembers the last few
// layers whose frames were booked or released on it (match.Host.Ran), and
// each layer and job the last few hosts where that happened, so matching
// finds a layer's warm hosts without walking the index (WalkWarm). It is fed
// by the procs the replica applies, inserted or deleted (no database read of
// its own), or by ProcBooked and ProcReleased (the simulator).
const (
	// ranMemory is how many layers a host remembers.
	ranMemory = 4
	// warmHosts is how many hosts a layer or job remembers: the hosts where
	// its frames ended last are those with room for its next ones.
	warmHosts = 4
)

// ProcBooked tells the index that a frame of layer (of job) was booked on
// the host now, as the replica does when it applies a new proc.
func (h *Hosts) ProcBooked(hostID, layerID, jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.ran(hostID, layerID, jobID, h.now(), 1)
}

// ProcReleased tells the index that a frame of layer (of job) left the host
// now, as the replica does when it applies a deleted proc.
func (h *Hosts) ProcReleased(hostID, layerID, jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.ran(hostID, layerID, jobID, h.now(), -1)
}

// ran remembers a frame of layer booked (d 1) or released (d -1) on the
// host at at.
func (st *hostState) ran(hostID, layerID, jobID string, at time.Time, d int32) {
	rec := st.hosts[hostID]
	if rec == nil || layerID == "" {
		return
	}
	e := match.Ran{Layer: layerID, Job: jobID, At: at}
	for _, r := range rec.h.Ran {
		if r.Layer == layerID {
			e.Running = r.Running
			e.Job = cmp.Or(e.Job, r.Job)
		}
	}
	e.Running = max(0, e.Running+d)
	// A new slice each time: a Host handed out (to a placement) shares it.
	out := make([]match.Ran, 1, ranMemory)
	out[0] = e
	for _, r := range rec.h.Ran {
		if r.Layer != layerID && len(out) < ranMemory {
			out = append(out, r)
		}
	}
	rec.h.Ran = out
	if st.warmLayers == nil {
		st.warmLayers, st.warmJobs = map[string][]*hostRec{}, map[string][]*hostRec{}
	}
	toFront(st.warmLayers, layerID, rec)
	if e.Job != "" {
		toFront(st.warmJobs, e.Job, rec)
	}
	// Layers and jobs come and go: rebuild from the hosts' memories when the
	// keys outgrow them.
	if len(st.warmLayers)+len(st.warmJobs) > 4*ranMemory*len(st.hosts)+64 {
		st.rebuildWarm()
	}
}

// toFront puts rec first in m[key], keeping at most warmHosts.
func toFront(m map[string][]*hostRec, key string, rec *hostRec) {
	l := m[key]
	i := slices.Index(l, rec)
	switch {
	case i < 0 && len(l) < warmHosts:
		l = append(l, nil)
		i = len(l) - 1
	case i < 0:
		i = len(l) - 1
	}
	copy(l[1:i+1], l[:i])
	l[0] = rec
	m[key] = l
}

// rebuildWarm rebuilds the hosts of each layer and job from the hosts'
// memories, the most recent first (ties by host id).
func (st *hostState) rebuildWarm() {
	type seen struct {
		at  time.Time
		rec *hostRec
	}
	layers, jobs := map[string][]seen{}, map[string][]seen{}
	for _, rec := range st.hosts {
		for _, r := range rec.h.Ran {
			layers[r.Layer] = append(layers[r.Layer], seen{r.At, rec})
			if r.Job != "" {
				jobs[r.Job] = append(jobs[r.Job], seen{r.At, rec})
			}
		}
	}
	build := func(from map[string][]seen) map[string][]*hostRec {
		out := make(map[string][]*hostRec, len(from))
		for k, ss := range from {
			slices.SortFunc(ss, func(a, b seen) int {
				return cmp.Or(b.at.Compare(a.at), cmp.Compare(a.rec.id, b.rec.id))
			})
			recs := make([]*hostRec, 0, min(len(ss), warmHosts))
			for _, s := range ss {
				if len(recs) == warmHosts {
					break
				}
				if !slices.Contains(recs, s.rec) {
					recs = append(recs, s.rec)
				}
			}
			out[k] = recs
		}
		return out
	}
	st.warmLayers, st.warmJobs = build(layers), build(jobs)
}

// carryRan gives the hosts of st, a state just loaded, what the hosts of
// old remembered: a layer the load found no proc of keeps its time, with
// none running.
func (st *hostState) carryRan(old *hostState) {
	for id, o := range old.hosts {
		rec := st.hosts[id]
		if rec == nil || len(o.h.Ran) == 0 {
			continue
		}
		out := slices.Clone(rec.h.Ran)
		for _, r := range o.h.Ran {
			if len(out) < ranMemory && !slices.ContainsFunc(out, func(n match.Ran) bool { return n.Layer == r.Layer }) {
				r.Running = 0
				out = append(out, r)
			}
		}
		rec.h.Ran = out
	}
	st.rebuildWarm()
}

// WalkWarm implements match.WarmWalker: of the hosts with cores idle that a
// walk of the facility's tag with at least min idle would visit
// (uncontested: without those carrying a contested tag other than tag,
// WalkUncontested's first walk), those the layer remembers, then those its
// job does. A host dropped from the index is never filed again (inTrees).
func (h *Hosts) WalkWarm(facility, tag string, min match.Resources, cores int64, layerID, jobID string,
	uncontested bool, visit func(match.Host) bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	st := h.st
	ix := st.index[tagKey{facility, cluster.Normalize(tag)}]
	if ix == nil {
		return
	}
	cutoff := h.cutoff()
	var own int32
	if ix.contested {
		own = 1
	}
	walk := func(recs, skip []*hostRec) bool {
		for _, rec := range recs {
			if rec.h.Idle.Cores != cores || !rec.inTrees || slices.Contains(skip, rec) || !slices.Contains(rec.idxs, ix) ||
				!rec.h.Idle.Covers(min) || rec.ping.Before(cutoff) || uncontested && rec.contested > own ||
				h.gate != nil && !h.gate.Allowed(rec.h.Name) {
				continue
			}
			if !visit(rec.h) {
				return false
			}
		}
		return true
	}
	layers, jobs := st.warmLayers[layerID], []*hostRec(nil)
	if jobID != "" {
		jobs = st.warmJobs[jobID]
	}
	if len(layers)+len(jobs) == 0 {
		return
	}
	// Only hosts filed with exactly cores idle can be visited. Reading a
	// remembered host's record is a cache miss, most of a walk's cost
	// (BENCHMARKS.md, "Every feature on"); when fewer hosts are filed at
	// cores than the layer and job remember, which is so of most levels
	// once hosts are partly used, the remembered hosts are kept by whether
	// they are among those, reading none of them.
	it, ok := ix.levels.Get(levelItem{cores: cores})
	if !ok {
		return
	}
	var keptL, keptJ [warmHosts]*hostRec
	if n := it.lv.hosts.Len(); n < len(layers)+len(jobs) {
		var filed [2 * warmHosts]*hostRec
		k := 0
		it.lv.hosts.Ascend(func(s slot) bool {
			filed[k] = s.rec
			k++
			return true
		})
		layers, jobs = among(keptL[:0], layers, filed[:k]), among(keptJ[:0], jobs, filed[:k])
	}
	if walk(layers, nil) {
		walk(jobs, layers)
	}
}

// among appends to out the recs that are in of, in the order of recs.
func among(out, recs, of []*hostRec) []*hostRec {
	for _, rec := range recs {
		if slices.Contains(of, rec) {
			out = append(out, rec)
		}
	}
	return out
}

// procRan applies a change of a proc row (apply) and tells the host index
// of a frame booked or released by it.
func procRan(hs *hostState, us *usageState, c *cdc.Change, now time.Time, apply func() error) error {
	key, kerr := keyOf(c, "pk_proc")
	var old procRec
	had := false
	if kerr == nil {
		if p := us.procs[key]; p != nil {
			old, had = *p, true
		}
	}
	if err := apply(); err != nil || kerr != nil {
		return err
	}
	p := us.procs[key]
	if had && (p == nil || p.host != old.host || p.layer != old.layer) {
		hs.ran(old.host, old.layer, old.job, now, -1)
	}
	if p != nil && (!had || p.host != old.host || p.layer != old.layer) {
		hs.ran(p.host, p.layer, p.job, now, 1)
	}
	return nil
}
