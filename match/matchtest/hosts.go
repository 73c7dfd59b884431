// Package matchtest holds in-memory fakes of match's Hosts and Caps for tests
// and benchmarks. They are simple, not the production index (package cache).
package matchtest

import (
	"slices"
	"strings"
	"sync"

	"github.com/cuesched/cuesched/match"
)

// Hosts is an in-memory match.Hosts. Each (facility, tag) has an index in two
// levels: the distinct idle-core values in ascending order, each holding its
// hosts' (idle memory, slot) keys in ascending order, so a walk skips a level
// whose largest idle memory is too small without visiting it. Slots are given
// in id order, so slot order is id order and a level's keys are searched
// without touching the hosts. It is safe for concurrent use; a visit function
// must not call back into it.
//
// Tag pressure is set by hand (SetContested): WalkUncontested leaves out the
// hosts carrying a contested tag other than the one walked.
type Hosts struct {
	mu    sync.Mutex
	ents  []entry // by slot
	byID  map[string]int32
	index map[tagKey]*tagIndex
	warm  []int32 // the slots of hosts with a Ran, in id order
}

type tagKey struct{ facility, tag string }

type entry struct {
	h    match.Host
	idxs []*tagIndex
	// contested counts the contested tags among idxs, so a walk tells a
	// contested host by one comparison.
	contested int
}

// tagIndex keeps its levels in a pool and orders them by reference, so
// re-indexing moves plain integers, never pointers.
type tagIndex struct {
	levels    []levelRef // ascending cores
	pool      []level
	free      []int32 // pool entries emptied, kept for reuse
	slots     []int32 // the hosts carrying the tag
	contested bool
}

type levelRef struct {
	cores int64
	at    int32 // in pool
}

type level struct {
	keys []key // ascending
}

type key struct {
	mem  int64
	slot int32
}

func (a key) before(b key) bool {
	return a.mem < b.mem || a.mem == b.mem && a.slot < b.slot
}

// NewHosts indexes hs (of a repeated id, the last). Tags are indexed
// lower-cased, as match.Host documents them.
func NewHosts(hs []match.Host) *Hosts {
	last := make(map[string]match.Host, len(hs))
	for _, h := range hs {
		last[h.ID] = h
	}
	ids := make([]string, 0, len(last))
	for id := range last {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	f := &Hosts{ents: make([]entry, len(ids)), byID: make(map[string]int32, len(ids)), index: make(map[tagKey]*tagIndex)}
	for i, id := range ids {
		s := int32(i)
		f.byID[id] = s
		e := &f.ents[s]
		e.h = last[id]
		if len(e.h.Ran) > 0 {
			f.warm = append(f.warm, s)
		}
		for _, t := range e.h.Tags {
			k := tagKey{e.h.Facility, strings.ToLower(t)}
			ix := f.index[k]
			if ix == nil {
				ix = &tagIndex{}
				f.index[k] = ix
			}
			if !slices.Contains(e.idxs, ix) {
				e.idxs = append(e.idxs, ix)
				ix.slots = append(ix.slots, s)
				ix.insert(e.h.Idle.Cores, key{e.h.Idle.Mem, s})
			}
		}
	}
	return f
}

// Host returns the host's current state.
func (f *Hosts) Host(id string) (match.Host, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byID[id]
	if !ok {
		return match.Host{}, false
	}
	return f.ents[s].h, true
}

// SetContested marks a tag of a facility contested (its waiting work needs
// its hosts) or not.
func (f *Hosts) SetContested(facility, tag string, contested bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ix := f.index[tagKey{facility, strings.ToLower(tag)}]
	if ix == nil || ix.contested == contested {
		return
	}
	ix.contested = contested
	d := 1
	if !contested {
		d = -1
	}
	for _, s := range ix.slots {
		f.ents[s].contested += d
	}
}

// Walk implements match.Hosts. It leaves out no host for a claim.
func (f *Hosts) Walk(facility, tag string, min match.Resources, _ *match.Claim, visit func(match.Host) bool) {
	f.walk(facility, tag, min, visit, false)
}

// WalkUncontested implements match.Hosts. It leaves out no host for a
// claim.
func (f *Hosts) WalkUncontested(facility, tag string, min match.Resources, _ *match.Claim, visit func(match.Host) bool) bool {
	return f.walk(facility, tag, min, visit, true)
}

func (f *Hosts) walk(facility, tag string, min match.Resources, visit func(match.Host) bool, avoid bool) (skipped bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ix := f.index[tagKey{facility, tag}]
	if ix == nil {
		return false
	}
	// A host of this index counts its own tag when that is contested.
	own := 0
	if ix.contested {
		own = 1
	}
	for _, ref := range ix.levels[ix.firstLevel(min.Cores):] {
		lv := &ix.pool[ref.at]
		if lv.keys[len(lv.keys)-1].mem < min.Mem {
			continue // no host of this level has the memory
		}
		for _, k := range lv.keys[lv.position(key{mem: min.Mem, slot: -1}):] {
			e := &f.ents[k.slot]
			h := &e.h
			if h.Idle.GPUs < min.GPUs || h.Idle.GPUMem < min.GPUMem {
				continue
			}
			if avoid && e.contested > own {
				skipped = true
				continue
			}
			if !visit(*h) {
				return skipped
			}
		}
	}
	return skipped
}

// Tagged implements match.Hosts.
func (f *Hosts) Tagged(facility, tag string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index[tagKey{facility, tag}] != nil
}

// Take implements match.Hosts.
func (f *Hosts) Take(hostID string, r match.Resources) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byID[hostID]
	if !ok || !f.ents[s].h.Idle.Covers(r) {
		return false
	}
	f.move(s, f.ents[s].h.Idle.Sub(r))
	return true
}

// Return implements match.Hosts; tests also use it to finish a proc.
func (f *Hosts) Return(hostID string, r match.Resources) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.byID[hostID]; ok {
		f.move(s, f.ents[s].h.Idle.Add(r))
	}
}

func (f *Hosts) move(s int32, idle match.Resources) {
	e := &f.ents[s]
	if idle.Cores != e.h.Idle.Cores || idle.Mem != e.h.Idle.Mem {
		from, to := key{e.h.Idle.Mem, s}, key{idle.Mem, s}
		for _, ix := range e.idxs {
			ix.remove(e.h.Idle.Cores, from)
			ix.insert(idle.Cores, to)
		}
	}
	e.h.Idle = idle
}

// firstLevel is the first level with at least cores.
func (ix *tagIndex) firstLevel(cores int64) int {
	lo, hi := 0, len(ix.levels)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ix.levels[m].cores < cores {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// position is where k sits, or would sit, in the level.
func (lv *level) position(k key) int {
	lo, hi := 0, len(lv.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if lv.keys[m].before(k) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (ix *tagIndex) insert(cores int64, k key) {
	i := ix.firstLevel(cores)
	if i == len(ix.levels) || ix.levels[i].cores != cores {
		var at int32
		if n := len(ix.free); n > 0 {
			at, ix.free = ix.free[n-1], ix.free[:n-1]
		} else {
			at = int32(len(ix.pool))
			ix.pool = append(ix.pool, level{})
		}
		ix.levels = slices.Insert(ix.levels, i, levelRef{cores: cores, at: at})
	}
	lv := &ix.pool[ix.levels[i].at]
	lv.keys = slices.Insert(lv.keys, lv.position(k), k)
}

func (ix *tagIndex) remove(cores int64, k key) {
	i := ix.firstLevel(cores)
	if i == len(ix.levels) || ix.levels[i].cores != cores {
		return
	}
	at := ix.levels[i].at
	lv := &ix.pool[at]
	j := lv.position(k)
	if j == len(lv.keys) || lv.keys[j] != k {
		return
	}
	lv.keys = slices.Delete(lv.keys, j, j+1)
	if len(lv.keys) == 0 {
		ix.levels = slices.Delete(ix.levels, i, i+1)
		ix.free = append(ix.free, at)
	}
}

// WalkWarm implements match.WarmWalker over the hosts' Ran (set in the hosts
// given to NewHosts): those that ran a frame of the layer, then of the job,
// each in id order.
func (f *Hosts) WalkWarm(facility, tag string, min match.Resources, cores int64, layerID, jobID string,
	uncontested bool, visit func(match.Host) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ix := f.index[tagKey{facility, tag}]
	if ix == nil {
		return
	}
	own := 0
	if ix.contested {
		own = 1
	}
	ran := func(h *match.Host, layer bool) bool {
		for _, r := range h.Ran {
			if layer && r.Layer == layerID || !layer && r.Job == jobID {
				return true
			}
		}
		return false
	}
	for _, layer := range []bool{true, false} {
		for _, s := range f.warm {
			e := &f.ents[s]
			h := &e.h
			if h.Idle.Cores != cores || !slices.Contains(e.idxs, ix) || !ran(h, layer) || !layer && ran(h, true) || !h.Idle.Covers(min) || uncontested && e.contested > own {
				continue
			}
			if !visit(*h) {
				return
			}
		}
	}
}
