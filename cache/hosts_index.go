package cache

import (
	"time"

	"github.com/google/btree"

	"github.com/cuesched/cuesched/match"
)

// The index of one (facility, tag) has two levels (DESIGN.md, "The host
// index shape matters"): the distinct idle-core values in ascending order,
// each holding a B-tree of its hosts by (idle memory, host id), and each
// remembering its largest idle memory so a walk skips a level that cannot
// have enough memory without descending into it. A single tree keyed by
// (cores, memory, id) would make a best-fit walk step over every host with
// enough cores but too little memory.

const btreeDegree = 16

type tagKey struct{ facility, tag string }

// slot files a host in a level by the memory it was filed under.
type slot struct {
	mem int64
	id  string
	rec *hostRec
}

func slotLess(a, b slot) bool {
	if a.mem != b.mem {
		return a.mem < b.mem
	}
	return a.id < b.id
}

type level struct {
	maxMem int64 // the largest idle memory filed in hosts
	hosts  *btree.BTreeG[slot]
}

type levelItem struct {
	cores int64
	lv    *level
}

func levelLess(a, b levelItem) bool { return a.cores < b.cores }

// tagIndex holds the offered hosts of one facility carrying one tag; n
// counts every host carrying it, offered or not (match.Hosts.Tagged).
type tagIndex struct {
	key    tagKey
	n      int
	levels *btree.BTreeG[levelItem]
}

// trees is what the indexes of one state share: node and level free lists,
// so hosts moving between levels cost no allocation once warm.
type trees struct {
	slots  *btree.FreeListG[slot]
	levels *btree.FreeListG[levelItem]
	spare  []*level
}

func newTrees() *trees {
	return &trees{slots: btree.NewFreeListG[slot](256), levels: btree.NewFreeListG[levelItem](64)}
}

func (t *trees) newIndex(k tagKey) *tagIndex {
	return &tagIndex{key: k, levels: btree.NewWithFreeListG(btreeDegree, levelLess, t.levels)}
}

func (t *trees) insert(ix *tagIndex, r *hostRec) {
	it, ok := ix.levels.Get(levelItem{cores: r.ixCores})
	if !ok {
		var lv *level
		if n := len(t.spare); n > 0 {
			lv, t.spare = t.spare[n-1], t.spare[:n-1]
		} else {
			lv = &level{hosts: btree.NewWithFreeListG(btreeDegree, slotLess, t.slots)}
		}
		lv.maxMem = r.ixMem
		it = levelItem{cores: r.ixCores, lv: lv}
		ix.levels.ReplaceOrInsert(it)
	}
	it.lv.hosts.ReplaceOrInsert(slot{mem: r.ixMem, id: r.id, rec: r})
	if r.ixMem > it.lv.maxMem {
		it.lv.maxMem = r.ixMem
	}
}

func (t *trees) remove(ix *tagIndex, r *hostRec) {
	it, ok := ix.levels.Get(levelItem{cores: r.ixCores})
	if !ok {
		return
	}
	it.lv.hosts.Delete(slot{mem: r.ixMem, id: r.id})
	switch {
	case it.lv.hosts.Len() == 0:
		ix.levels.Delete(it)
		t.spare = append(t.spare, it.lv)
	case r.ixMem >= it.lv.maxMem:
		top, _ := it.lv.hosts.Max()
		it.lv.maxMem = top.mem
	}
}

// walk visits the hosts with at least min idle in ascending (idle cores,
// idle memory, id) order, skipping those whose GPUs or GPU memory fall short
// and those last pinged before cutoff, until visit returns false.
func (ix *tagIndex) walk(min match.Resources, cutoff time.Time, visit func(match.Host) bool) {
	w := walker{min: min, cutoff: cutoff, visit: visit, more: true}
	ix.levels.AscendGreaterOrEqual(levelItem{cores: min.Cores}, w.level)
}

type walker struct {
	min    match.Resources
	cutoff time.Time
	visit  func(match.Host) bool
	more   bool
}

func (w *walker) level(it levelItem) bool {
	if it.lv.maxMem < w.min.Mem {
		return true
	}
	it.lv.hosts.AscendGreaterOrEqual(slot{mem: w.min.Mem}, w.host)
	return w.more
}

func (w *walker) host(s slot) bool {
	r := s.rec
	if r.h.Idle.GPUs < w.min.GPUs || r.h.Idle.GPUMem < w.min.GPUMem || r.ping.Before(w.cutoff) {
		return true
	}
	w.more = w.visit(r.h)
	return w.more
}
