package cache

import (
	"hash/fnv"
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

// slot files a host in a level by the memory it was filed under. held
// (not part of the key) tells a host a reservation holds (hostRec.resv)
// without reading its record: a walk whose claim refuses every held host
// steps over them reading only the slot.
type slot struct {
	mem  int64
	id   string
	rec  *hostRec
	held bool
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
	// Of the hosts filed here, how many carry at least one and at least two
	// contested tags (hostRec.contested), so a walk avoiding contested hosts
	// skips a level holding nothing else without descending into it; and
	// how many are held (slot.held), so a walk whose claim refuses them all
	// skips a level holding nothing else too.
	contested1, contested2 int
	held                   int
}

// count adds d hosts carrying n contested tags to the level's counts.
func (lv *level) count(n int32, d int) {
	if n >= 1 {
		lv.contested1 += d
	}
	if n >= 2 {
		lv.contested2 += d
	}
}

// contested is how many hosts of the level are contested for a walk of an
// index whose own tag counts own (0 or 1) in every host's number.
func (lv *level) contested(own int32) int {
	if own > 0 {
		return lv.contested2
	}
	return lv.contested1
}

type levelItem struct {
	cores int64
	lv    *level
}

func levelLess(a, b levelItem) bool { return a.cores < b.cores }

// tagIndex holds the offered hosts of one facility carrying one tag; n
// counts every host carrying it, offered or not (match.Hosts.Tagged).
//
// Tag pressure: supply is the idle cores and memory of the hosts filed here,
// kept as they are filed and taken out; demand is what waiting work that can
// run only on hosts with this tag still needs (Hosts.SetDemand); the tag is
// contested while demand reaches the configured fraction of supply in cores
// or memory (hostState.pressured).
type tagIndex struct {
	key       tagKey
	n         int
	levels    *btree.BTreeG[levelItem]
	supply    match.Resources // Cores and Mem only
	demand    match.Resources
	foreign   bool // contested whatever the demand (hostState.foreign)
	pressured bool // demand reaches the fraction (over foreignStrain when foreign) of supply
	contested bool // foreign or pressured
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

// insert files r in ix at (cores, mem), as its i-th index.
func (t *trees) insert(ix *tagIndex, r *hostRec, i int, cores, mem int64) {
	it, ok := ix.levels.Get(levelItem{cores: cores})
	if !ok {
		var lv *level
		if n := len(t.spare); n > 0 {
			lv, t.spare = t.spare[n-1], t.spare[:n-1]
		} else {
			lv = &level{hosts: btree.NewWithFreeListG(btreeDegree, slotLess, t.slots)}
		}
		lv.maxMem = mem
		it = levelItem{cores: cores, lv: lv}
		ix.levels.ReplaceOrInsert(it)
	}
	it.lv.hosts.ReplaceOrInsert(slot{mem: mem, id: r.id, rec: r, held: r.resv != nil})
	if mem > it.lv.maxMem {
		it.lv.maxMem = mem
	}
	it.lv.count(r.contested, 1)
	if r.resv != nil {
		it.lv.held++
	}
	r.lvs[i] = it.lv
	ix.supply.Cores += cores
	ix.supply.Mem += mem
}

// remove takes r, filed where it says (ixCores, ixMem), out of ix, its i-th
// index.
func (t *trees) remove(ix *tagIndex, r *hostRec, i int) {
	lv := r.lvs[i]
	if lv == nil {
		return
	}
	if _, ok := lv.hosts.Delete(slot{mem: r.ixMem, id: r.id}); !ok {
		return
	}
	r.lvs[i] = nil
	lv.count(r.contested, -1)
	if r.resv != nil {
		lv.held--
	}
	ix.supply.Cores -= r.ixCores
	ix.supply.Mem -= r.ixMem
	switch {
	case lv.hosts.Len() == 0:
		ix.levels.Delete(levelItem{cores: r.ixCores})
		t.spare = append(t.spare, lv)
	case r.ixMem >= lv.maxMem:
		top, _ := lv.hosts.Max()
		lv.maxMem = top.mem
	}
}

// move re-files r, filed where it says (ixCores, ixMem) and counting its
// contested tags, at (cores, mem) in ix, its i-th index. A host alone in its
// level (always so in its hostname tag's index, and mostly so in others, as
// idle core counts spread) takes its level along: the level is filed again
// under its new cores, saving the search for a level to join and the
// shuffle through the spares.
func (t *trees) move(ix *tagIndex, r *hostRec, i int, cores, mem int64) {
	lv := r.lvs[i]
	if lv == nil || lv.hosts.Len() != 1 {
		t.remove(ix, r, i)
		t.insert(ix, r, i, cores, mem)
		return
	}
	if cores != r.ixCores {
		if ix.levels.Len() == 1 {
			ix.levels.DeleteMin()
			ix.levels.ReplaceOrInsert(levelItem{cores: cores, lv: lv})
		} else if other, found := ix.levels.ReplaceOrInsert(levelItem{cores: cores, lv: lv}); found {
			// Other hosts hold that level: put it back, and join them.
			ix.levels.ReplaceOrInsert(other)
			t.remove(ix, r, i)
			t.insert(ix, r, i, cores, mem)
			return
		} else {
			ix.levels.Delete(levelItem{cores: r.ixCores})
		}
	}
	lv.hosts.DeleteMin()
	lv.hosts.ReplaceOrInsert(slot{mem: mem, id: r.id, rec: r, held: r.resv != nil})
	lv.maxMem = mem
	ix.supply.Cores += cores - r.ixCores
	ix.supply.Mem += mem - r.ixMem
}

// walkOpts is what a walk leaves out besides the hosts without min idle:
// those last pinged before cutoff, refused by gate (when not nil), held by
// a reservation claim refuses (when not nil: hostRec.resv, of the claim's
// set), and those avoid says.
type walkOpts struct {
	cutoff time.Time
	gate   HostGate
	claim  *match.Claim
}

// walk visits the hosts with at least min idle in ascending (idle cores,
// idle memory, id) order, skipping those whose GPUs or GPU memory fall short
// and those o leaves out, until visit returns false. It also skips the hosts
// avoid says (carrying a contested, or a pressured, tag other than this
// index's, or on the other side of the split), and reports whether it
// skipped any, and whether it left out any for the claim.
func (ix *tagIndex) walk(min match.Resources, o walkOpts, visit func(match.Host) bool, avoid avoidance) (skipped, held bool) {
	return ix.walkSide(min, o, visit, avoid, false)
}

// walkSide is walk, with the side of the split an avoidOtherSide walk keeps
// (tagSide).
func (ix *tagIndex) walkSide(min match.Resources, o walkOpts, visit func(match.Host) bool,
	avoid avoidance, tagSide bool) (skipped, held bool) {
	w := walker{ix: ix, min: min, walkOpts: o, visit: visit, more: true, avoid: avoid, tagSide: tagSide}
	if ix.contested {
		w.own = 1
	}
	ix.levels.AscendGreaterOrEqual(levelItem{cores: min.Cores}, w.level)
	return w.skipped, w.held
}

type walker struct {
	ix  *tagIndex
	min match.Resources
	walkOpts
	visit   func(match.Host) bool
	more    bool
	avoid   avoidance
	own     int32 // 1 when the walked tag is contested: every host counts it
	skipped bool
	held    bool // left out a host for the claim
	tagSide bool // avoidOtherSide: the walk is of a tag that is no allocation's
	// stepOver: a held host of this level may be stepped over unread, as
	// leaving it out can change nothing the walk reports: the claim
	// refuses every held host, one has been left out (held), and no host
	// of the level is avoided (skipped).
	stepOver bool
}

func (w *walker) level(it levelItem) bool {
	if it.lv.maxMem < w.min.Mem {
		return true
	}
	if w.avoid == avoidContested && it.lv.contested(w.own) == it.lv.hosts.Len() {
		w.skipped = true
		return true
	}
	w.stepOver = w.claim != nil && w.claim.RefusesAll() &&
		(w.avoid == avoidNone || w.avoid == avoidContested && it.lv.contested(w.own) == 0)
	if w.stepOver && w.held && it.lv.held == it.lv.hosts.Len() {
		return true // only held hosts, each stepped over
	}
	it.lv.hosts.AscendGreaterOrEqual(slot{mem: w.min.Mem}, w.host)
	return w.more
}

func (w *walker) host(s slot) bool {
	if s.held && w.stepOver && w.held {
		return true
	}
	r := s.rec
	if r.h.Idle.GPUs < w.min.GPUs || r.h.Idle.GPUMem < w.min.GPUMem || r.ping.Before(w.cutoff) {
		return true
	}
	if w.avoid == avoidContested && r.contested > w.own ||
		(w.avoid == avoidPressured || w.avoid == avoidOtherSide) && w.pressuredOther(r) ||
		w.avoid == avoidOtherSide && r.tagSide != w.tagSide {
		w.skipped = true
		return true
	}
	if w.gate != nil && !w.gate.Allowed(r.h.Name) {
		return true
	}
	if w.claim != nil {
		if r.resv != nil && w.claim.Refuses(r.resv) {
			w.held, w.claim.LeftOut = true, true
			return true
		}
		w.claim.At = r.resv
	}
	w.more = w.visit(r.h)
	return w.more
}

// avoidance is which hosts a walk leaves out.
type avoidance int8

const (
	avoidNone      avoidance = iota
	avoidContested           // carrying a contested tag other than the walked one
	avoidPressured           // carrying a pressured tag other than the walked one
	avoidOtherSide           // avoidPressured, and on the other side of the split (hostRec.tagSide)
)

// tagSideShare is the share of the hosts (one in tagSideShare, by a hash of
// the key) kept first for tag work when every host is contested: a third,
// as tag buckets hold the narrower work (on the peer stress farm a third of
// the frames, the rest allocation work).
const tagSideShare = 3

// tagSide is the side of the split a host is on (hostRec.tagSide), the same
// in every instance: true for tag work.
func tagSide(hostID string) bool {
	h := fnv.New32a()
	h.Write([]byte(hostID))
	return h.Sum32()%tagSideShare == 0
}

// pressuredOther reports whether r carries a pressured tag other than the
// walked one. Hosts carry few tags: no counts are kept for it, as this
// walk runs only when every host the first one met was contested.
func (w *walker) pressuredOther(r *hostRec) bool {
	for _, ix := range r.idxs {
		if ix != w.ix && ix.pressured {
			return true
		}
	}
	return false
}
