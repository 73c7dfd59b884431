package cache

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// Cuebot's host minimums (DESIGN.md; match/rules.go checks the same on
// every candidate): a host under any of them is not offered at all.
const (
	minIdleCores   = 10     // core units
	minIdleMem     = 262144 // KB
	minMemFree     = 524288 // KB of reported free memory
	minTempPercent = 5      // free temp space, percent of the total; Windows hosts exempt
)

// Hosts is the host index matching draws from (it implements match.Hosts):
// per (facility, normalized tag) an index of the hosts carrying that tag,
// and one capacity record per host shared by all its indexes.
//
// A host is offered when it is UP, OPEN, pinged within the configured age
// and above Cuebot's minimums; its idle capacity is host idle cores and GPUs
// and the smaller of host idle and reported free memory (GPU memory
// likewise), less what matchers have checked out (Take) and what dispatch
// has booked (Booked) but the stream has not yet echoed back.
//
// Tag pressure keeps scarce tagged hosts for the work that can run only on
// them: per (facility, tag) the index sums the idle capacity of its hosts
// (supply) and takes what waiting work needs of them (SetDemand); a host
// carrying a contested tag is left out of the walks of other tags
// (WalkUncontested) while other hosts fit.
//
// One lock guards the whole index: a host sits in several indexes, and a
// checkout must move it in all of them at once. Walks share the lock; Take,
// Return, Booked and the stream's updates hold it alone, briefly.
type Hosts struct {
	mu      sync.RWMutex
	st      *hostState
	applied cdc.LSN
	// echoed remembers the xids of the transactions applied last, so a
	// booking whose echo the stream applied before dispatch reported it
	// (Booked) is not held a second time.
	echoed   map[uint32]struct{}
	echoRing []uint32
	echoNext int
	now      func() time.Time
	maxAge   time.Duration
	gate     HostGate
}

// HostGate says by name whether a host may be offered now: a host whose RQD
// refuses launches stays out of matching while its breaker is open
// (dispatch.RQDClient implements it), instead of being placed on and dropped
// by the booking's re-check round after round. Walks ask it for every host
// they visit, so it must be cheap, and it must not call back into Hosts.
type HostGate interface {
	Allowed(hostName string) bool
}

// SetGate sets the gate walks ask; nil offers every host.
func (h *Hosts) SetGate(g HostGate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = g
}

// echoMemory is how many applied transactions Hosts remembers for Booked.
const echoMemory = 4096

// NewHosts returns an empty index. Hosts last pinged more than maxAge
// before now() are not offered (maxAge <= 0: never stale).
func NewHosts(now func() time.Time, maxAge time.Duration) *Hosts {
	if now == nil {
		now = time.Now
	}
	return &Hosts{st: newHostState(), now: now, maxAge: maxAge, echoed: map[uint32]struct{}{},
		echoRing: make([]uint32, echoMemory)}
}

// hold is booked capacity waiting for its echo: the stream applying the
// booking transaction (xid), or passing its commit position (lsn).
type hold struct {
	r   match.Resources
	lsn cdc.LSN
	xid uint32
}

// hostRec is a host's one capacity record.
type hostRec struct {
	id    string
	row   hostRow
	h     match.Host // as offered; h.Idle is the effective idle capacity
	base  match.Resources
	taken match.Resources
	holds []hold
	ping  time.Time
	up    bool

	idxs    []*tagIndex // the indexes of its (facility, tag)s
	lvs     []*level    // while filed, its level in each of idxs
	inTrees bool        // filed in the trees of idxs
	ixCores int64       // where it is filed
	ixMem   int64
	// contested is how many of idxs are contested, kept while filed: a walk
	// of one of them tells a host kept for another tag by one comparison.
	contested int32
	// tagSide is the host's side of the split WalkUncontested makes when
	// every host is contested: kept first for tag work, or for allocation
	// work (tagSide()).
	tagSide bool
	// resv is the host's reservation in the set last marked
	// (Hosts.SetReservations), nil when it holds none.
	resv *match.Reservation
}

// hostState is the replicated host rows and the index built from them.
type hostState struct {
	allocs   map[string]allocRow
	hosts    map[string]*hostRec
	stats    map[string]*statRow // by pk_host_stat
	statOf   map[string]*statRow // by pk_host
	tagRows  map[string]tagRow   // by pk_host_tag
	hostTags map[string]map[string]int
	index    map[tagKey]*tagIndex
	held     map[*hostRec]struct{}
	trees    *trees
	dirty    map[string]struct{}
	// grown holds hosts whose replicated capacity grew, or which became
	// offered (in an index they just joined too), since Replica last
	// reported them: capacity that may fit waiting work, so the loop wakes
	// their clusters.
	grown map[string]struct{}
	// topo is set when a host or allocation came or went, or a host's
	// facility or tags changed: the set of clusters may have changed.
	topo bool
	// demand is the tag pressure's demand by (facility, tag), indexes or
	// not (Hosts.SetDemand); fraction is the share of supply demand must
	// reach for a tag to be contested (<= 0: never).
	demand   map[tagKey]match.Resources
	fraction float64
	// foreign holds the tags contested whatever their demand (work another
	// instance books on their hosts: match.TagDemand.Foreign).
	foreign map[tagKey]bool
	// warmLayers and warmJobs are the hosts where frames of a layer, or a
	// job, were last booked or released, the most recent first
	// (hosts_warm.go).
	warmLayers, warmJobs map[string][]*hostRec
	// resv is the reservations the hosts were last marked with
	// (Hosts.SetReservations), resvRecs the hosts marked.
	resv     *match.ReservationSet
	resvRecs []*hostRec
}

func newHostState() *hostState {
	return &hostState{
		allocs:   map[string]allocRow{},
		hosts:    map[string]*hostRec{},
		stats:    map[string]*statRow{},
		statOf:   map[string]*statRow{},
		tagRows:  map[string]tagRow{},
		hostTags: map[string]map[string]int{},
		index:    map[tagKey]*tagIndex{},
		held:     map[*hostRec]struct{}{},
		trees:    newTrees(),
		dirty:    map[string]struct{}{},
		grown:    map[string]struct{}{},
		demand:   map[tagKey]match.Resources{},
		fraction: DefaultPressureFraction,
		foreign:  map[tagKey]bool{},
	}
}

// DefaultPressureFraction is the share of a tag's supply its demand must
// reach for the tag to be contested. Demand counts waiting frames at their
// minimums, but Cuebot's sizing gives a threadable frame on a host that is
// filling more cores than its minimum (its memory's share of the idle memory,
// spread over all the host's cores): on the peer stress farm tagged frames
// got about 1.4 times their minimum cores, and with every allocation cluster
// planned before the tag buckets, 1.0 and 0.8 left tagged frames without
// hosts in 30 and 16 of 30 farm seeds, 0.7 in none. Half leaves a margin of
// two.
const DefaultPressureFraction = 0.5

func (h *Hosts) cutoff() time.Time {
	if h.maxAge <= 0 {
		return time.Time{}
	}
	return h.now().Add(-h.maxAge)
}

// Walk implements match.Hosts: the offered hosts of the facility carrying
// tag with at least min idle, in ascending (idle cores, idle memory, id)
// order, so the first one visited is the best fit. With a claim on the
// reservations last set (SetReservations), it leaves out the hosts they
// hold that the claim refuses.
func (h *Hosts) Walk(facility, tag string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if ix := h.st.index[tagKey{facility, cluster.Normalize(tag)}]; ix != nil {
		ix.walk(min, h.walkOpts(claim), visit, avoidNone)
	}
}

// walkOpts are a walk's options now, for claim: it is kept (Claim.Kept,
// said anew each walk, as another round may mark another set between two
// walks of one search) only when its set is the one the hosts were marked
// with (SetReservations), as the marks say nothing of another. Called
// with h.mu held.
func (h *Hosts) walkOpts(claim *match.Claim) walkOpts {
	o := walkOpts{cutoff: h.cutoff(), gate: h.gate}
	if claim != nil {
		claim.Kept = claim.Set != nil && claim.Set == h.st.resv
		if claim.Kept {
			o.claim = claim
		}
	}
	return o
}

// SetReservations marks the hosts set holds (each with its reservation),
// so that a walk with a claim on set leaves out those the claim refuses:
// matching would refuse each one, and held hosts mostly stay idle, so every
// walk reaching the idle hosts met them all. A walk with a claim on another
// set leaves out nothing.
func (h *Hosts) SetReservations(set *match.ReservationSet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.mark(set)
}

// mark marks the hosts set holds, and unmarks those the set marked before
// held (SetReservations).
func (st *hostState) mark(set *match.ReservationSet) {
	if set == st.resv {
		return
	}
	for _, rec := range st.resvRecs {
		rec.resv = nil
		st.refileHeld(rec, true)
	}
	st.resv, st.resvRecs = set, st.resvRecs[:0]
	for _, r := range set.All() {
		if rec := st.hosts[r.Host]; rec != nil && rec.resv == nil {
			rec.resv, _ = set.On(r.Host)
			st.resvRecs = append(st.resvRecs, rec)
			st.refileHeld(rec, false)
		}
	}
}

// markNew gives a host record made after the marking its reservation in
// the set marked, before it is filed.
func (st *hostState) markNew(rec *hostRec) {
	if r, ok := st.resv.On(rec.id); ok {
		rec.resv = r
		st.resvRecs = append(st.resvRecs, rec)
	}
}

// refileHeld files rec's slots again with whether it is held now
// (slot.held), in place (the key does not change), and counts it in its
// levels; was is whether it was held when filed. Called as soon as
// rec.resv changes, so a filed host is held exactly when rec.resv is set.
func (st *hostState) refileHeld(rec *hostRec, was bool) {
	held := rec.resv != nil
	if !rec.inTrees || was == held {
		return
	}
	d := 1
	if !held {
		d = -1
	}
	for _, lv := range rec.lvs {
		if lv != nil {
			lv.hosts.ReplaceOrInsert(slot{mem: rec.ixMem, id: rec.id, rec: rec, held: held})
			lv.held += d
		}
	}
}

// WalkUncontested implements match.Hosts: Walk without the hosts that carry
// a contested tag other than tag (SetDemand). When that leaves out every
// host it would visit, it walks again without only the hosts carrying a
// tag whose demand reaches the fraction of its supply: when every host
// carries a foreign tag (another instance works each manual tag's bucket),
// work goes where the tags' own need leaves room, not to the best fit among
// them all, which on a farm whose smallest hosts carry one tag fills that
// tag's hosts while its work waits.
//
// That walk first keeps to one side of a split of the hosts every instance
// computes alike (hostRec.tagSide): a walk of an allocation's tag to the
// hosts kept for allocation work, a walk of any other tag to those kept for
// tag work. When every allocation and every tag bucket with work is another
// instance's somewhere, an allocation cluster and a tag bucket of different
// instances both come here for the hosts they share, and without the split
// both took the same best fit and one booking dropped (8-12% of attempts
// with three instances, on the peer stress farm changed to have work in
// every allocation: BENCHMARKS.md). The split is a preference: the walk
// goes on over both sides when its own has nothing.
//
// A host left out for the claim counts as visited: the walk has met a
// host only the claim kept it from.
func (h *Hosts) WalkUncontested(facility, tag string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ix := h.st.index[tagKey{facility, cluster.Normalize(tag)}]
	if ix == nil {
		return false
	}
	o := h.walkOpts(claim)
	visited := false
	seen := func(host match.Host) bool {
		visited = true
		return visit(host)
	}
	skipped, held := ix.walk(min, o, seen, avoidContested)
	if !skipped {
		return false
	}
	if visited || held {
		return true
	}
	_, held = ix.walkSide(min, o, seen, avoidOtherSide, !h.st.allocTag(facility, ix.key.tag))
	if visited || held {
		return true
	}
	skipped, _ = ix.walk(min, o, visit, avoidPressured)
	return skipped
}

// allocTag reports whether tag (normalized) is the tag of an allocation of
// the facility.
func (st *hostState) allocTag(facility, tag string) bool {
	for _, a := range st.allocs {
		if a.facility == facility && cluster.Normalize(a.tag) == tag {
			return true
		}
	}
	return false
}

// SetDemand replaces the demand of tag pressure: a tag whose demand reaches
// the fraction (SetPressureFraction) of its supply, the idle cores or memory
// of the offered hosts carrying it, is contested, and its hosts are left to
// the work that needs them by every walk of another tag that can go
// elsewhere (WalkUncontested). Entries of one tag add up.
func (h *Hosts) SetDemand(ds []match.TagDemand) {
	demand := make(map[tagKey]match.Resources, len(ds))
	foreign := map[tagKey]bool{}
	for _, d := range ds {
		k := tagKey{d.Facility, cluster.Normalize(d.Tag)}
		if d.Foreign {
			foreign[k] = true
		}
		n := demand[k]
		n.Cores += max(d.Need.Cores, 0)
		n.Mem += max(d.Need.Mem, 0)
		demand[k] = n
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.setDemand(demand, foreign)
}

// SetPressureFraction sets the share of a tag's supply its demand must
// reach for the tag to be contested (DefaultPressureFraction unless set):
// 1 when the work needs all of it at its minimums, less to keep a margin;
// <= 0 turns tag pressure off.
func (h *Hosts) SetPressureFraction(f float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.fraction = f
	for _, ix := range h.st.index {
		h.st.judge(ix)
	}
}

// Pressure is one tag's supply (idle cores and memory of its offered
// hosts), demand, and whether it is contested.
func (h *Hosts) Pressure(facility, tag string) (supply, demand match.Resources, contested bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	k := tagKey{facility, cluster.Normalize(tag)}
	if ix := h.st.index[k]; ix != nil {
		return ix.supply, ix.demand, ix.contested
	}
	return match.Resources{}, h.st.demand[k], false
}

// Tagged implements match.Hosts.
func (h *Hosts) Tagged(facility, tag string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ix := h.st.index[tagKey{facility, cluster.Normalize(tag)}]
	return ix != nil && ix.n > 0
}

// Take implements match.Hosts: it checks r out of the host's capacity
// record if the host is still offered with r idle.
func (h *Hosts) Take(hostID string, r match.Resources) bool {
	if r.Cores < 0 || r.Mem < 0 || r.GPUs < 0 || r.GPUMem < 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rec := h.st.hosts[hostID]
	if rec == nil || !rec.inTrees || !rec.h.Idle.Covers(r) || rec.ping.Before(h.cutoff()) {
		return false
	}
	rec.taken = rec.taken.Add(r)
	h.st.reposition(rec)
	return true
}

// Return implements match.Hosts: capacity taken that will not be booked.
func (h *Hosts) Return(hostID string, r match.Resources) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rec := h.st.hosts[hostID]; rec != nil {
		rec.taken = subFloor(rec.taken, r)
		h.st.reposition(rec)
	}
}

// Booked turns capacity taken by Take into a booking committed by dispatch
// in transaction xid: it stays held until the stream applies that
// transaction, whose host rows carry the booking, or has passed commitLSN
// (the pg_current_wal_lsn() read right after the commit); from then on the
// replicated host row is the truth. Releasing the hold in the same step that
// applies the echo means the host is never offered with its pre-booking
// capacity, nor counted short twice.
func (h *Hosts) Booked(hostID string, r match.Resources, commitLSN cdc.LSN, xid uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec := h.st.hosts[hostID]
	if rec == nil {
		return
	}
	rec.taken = subFloor(rec.taken, r)
	_, echoed := h.echoed[xid]
	if commitLSN > h.applied && !echoed {
		rec.holds = append(rec.holds, hold{r: r, lsn: commitLSN, xid: xid})
		h.st.held[rec] = struct{}{}
	}
	h.st.reposition(rec)
}

// echoLocked releases the holds of booking transaction xid, which the
// stream has just applied, and remembers it for a Booked still to come.
func (h *Hosts) echoLocked(xid uint32) {
	if old := h.echoRing[h.echoNext]; old != 0 {
		delete(h.echoed, old)
	}
	h.echoRing[h.echoNext] = xid
	h.echoNext = (h.echoNext + 1) % len(h.echoRing)
	h.echoed[xid] = struct{}{}
	for rec := range h.st.held {
		n := len(rec.holds)
		rec.holds = slices.DeleteFunc(rec.holds, func(x hold) bool { return x.xid == xid })
		if len(rec.holds) == n {
			continue
		}
		if len(rec.holds) == 0 {
			rec.holds = nil
			delete(h.st.held, rec)
		}
		h.st.reposition(rec)
	}
}

// Host returns a host as the index has it, offered or not.
func (h *Hosts) Host(hostID string) (match.Host, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	rec := h.st.hosts[hostID]
	if rec == nil {
		return match.Host{}, false
	}
	return rec.h, true
}

// HostNamed returns a host by host.str_name, offered or not: the name RQD
// and its breaker know it by.
func (h *Hosts) HostNamed(name string) (match.Host, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, rec := range h.st.hosts {
		if rec.h.Name == name {
			return rec.h, true
		}
	}
	return match.Host{}, false
}

// Allocs are the allocations as last replicated, for cluster.NewKeyer (a
// host's clusters follow its allocation and tags).
func (h *Hosts) Allocs() []cluster.Alloc {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]cluster.Alloc, 0, len(h.st.allocs))
	for id, a := range h.st.allocs {
		out = append(out, cluster.Alloc{ID: id, Facility: a.facility, Tag: a.tag})
	}
	slices.SortFunc(out, func(a, b cluster.Alloc) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ClusterKeys is every cluster a known host belongs to (cluster.Keyer.OfHost),
// in key order: the clusters there are to own.
func (h *Hosts) ClusterKeys(k *cluster.Keyer) []cluster.Key {
	h.mu.RLock()
	defer h.mu.RUnlock()
	seen := map[cluster.Key]struct{}{}
	for _, rec := range h.st.hosts {
		if rec.h.Facility == "" {
			continue
		}
		for _, key := range k.OfHost(rec.h.Facility, rec.h.Alloc, rec.h.Tags) {
			seen[key] = struct{}{}
		}
	}
	out := make([]cluster.Key, 0, len(seen))
	for key := range seen {
		out = append(out, key)
	}
	slices.SortFunc(out, func(a, b cluster.Key) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// drainChanges hands over (and forgets) the hosts whose capacity grew and
// whether the clusters may have changed since the last call.
func (st *hostState) drainChanges() (grown []match.Host, topo bool) {
	for id := range st.grown {
		if rec := st.hosts[id]; rec != nil {
			grown = append(grown, rec.h)
		}
	}
	clear(st.grown)
	topo, st.topo = st.topo, false
	return grown, topo
}

// Len is the number of hosts known, offered or not.
func (h *Hosts) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.st.hosts)
}

// advanceLocked releases the holds of bookings the stream has now applied.
func (h *Hosts) advanceLocked(lsn cdc.LSN) {
	if lsn <= h.applied {
		return
	}
	h.applied = lsn
	for rec := range h.st.held {
		rec.holds = slices.DeleteFunc(rec.holds, func(x hold) bool { return x.lsn <= lsn })
		if len(rec.holds) == 0 {
			rec.holds = nil
			delete(h.st.held, rec)
		}
		h.st.reposition(rec)
	}
}

// swapLocked installs a state loaded from a snapshot at lsn, carrying over
// the capacity matchers have checked out and the bookings not yet echoed.
func (h *Hosts) swapLocked(st *hostState, lsn cdc.LSN) {
	old := h.st
	h.st = st
	h.applied = max(h.applied, lsn)
	st.fraction = old.fraction
	st.setDemand(old.demand, old.foreign)
	st.carryRan(old)
	st.mark(old.resv)
	for _, o := range old.hosts {
		if o.taken == (match.Resources{}) && len(o.holds) == 0 {
			continue
		}
		rec := st.hosts[o.id]
		if rec == nil {
			continue
		}
		rec.taken = o.taken
		for _, x := range o.holds {
			if x.lsn > h.applied {
				rec.holds = append(rec.holds, x)
			}
		}
		if len(rec.holds) > 0 {
			st.held[rec] = struct{}{}
		}
		st.reposition(rec)
	}
}

func subFloor(a, b match.Resources) match.Resources {
	return match.Resources{
		Cores: max(0, a.Cores-b.Cores), Mem: max(0, a.Mem-b.Mem),
		GPUs: max(0, a.GPUs-b.GPUs), GPUMem: max(0, a.GPUMem-b.GPUMem),
	}
}

// offerable: UP, OPEN and above Cuebot's minimums (staleness is checked
// when walking, against the clock).
func offerable(rec *hostRec) bool {
	h := &rec.h
	if !rec.up || rec.row.lock != "OPEN" {
		return false
	}
	if h.Idle.Cores < minIdleCores || h.Idle.Mem < minIdleMem || h.MemFree < minMemFree {
		return false
	}
	// Windows hosts are exempt from the temp-space floor; the floor is
	// checked first as it is the cheaper test.
	if h.TempTotal <= 0 && h.TempFree > 0 || h.TempTotal > 0 && h.TempFree*100 >= minTempPercent*h.TempTotal {
		return true
	}
	return strings.EqualFold(h.OS, "windows")
}

// reposition files rec where its effective idle capacity belongs, or takes
// it out of the trees when it is no longer offered.
func (st *hostState) reposition(rec *hostRec) {
	idle := rec.base.Sub(rec.taken)
	for _, x := range rec.holds {
		idle = idle.Sub(x.r)
	}
	rec.h.Idle = idle
	want := offerable(rec)
	switch {
	case rec.inTrees && want:
		if rec.ixCores == idle.Cores && rec.ixMem == idle.Mem {
			return
		}
		// Filed, its contested count is current (judge keeps it).
		for i, ix := range rec.idxs {
			st.trees.move(ix, rec, i, idle.Cores, idle.Mem)
		}
		rec.ixCores, rec.ixMem = idle.Cores, idle.Mem
	case rec.inTrees:
		for i, ix := range rec.idxs {
			st.trees.remove(ix, rec, i)
		}
		rec.inTrees = false
	case want:
		rec.contested = 0
		for _, ix := range rec.idxs {
			if ix.contested {
				rec.contested++
			}
		}
		if len(rec.lvs) != len(rec.idxs) {
			rec.lvs = make([]*level, len(rec.idxs))
		}
		for i, ix := range rec.idxs {
			st.trees.insert(ix, rec, i, idle.Cores, idle.Mem)
		}
		rec.ixCores, rec.ixMem = idle.Cores, idle.Mem
		rec.inTrees = true
	}
	// The supply of its tags moved.
	for _, ix := range rec.idxs {
		st.judge(ix)
	}
}

// setDemand installs the demand and the foreign tags and judges every tag
// they change.
func (st *hostState) setDemand(demand map[tagKey]match.Resources, foreign map[tagKey]bool) {
	oldForeign := st.foreign
	st.foreign = foreign
	for k := range oldForeign {
		if ix := st.index[k]; ix != nil && !foreign[k] {
			ix.foreign = false
			st.judge(ix)
		}
	}
	for k := range foreign {
		if ix := st.index[k]; ix != nil {
			ix.foreign = true
			st.judge(ix)
		}
	}
	old := st.demand
	st.demand = demand
	for k := range old {
		if _, ok := demand[k]; !ok {
			if ix := st.index[k]; ix != nil {
				ix.demand = match.Resources{}
				st.judge(ix)
			}
		}
	}
	for k, d := range demand {
		if ix := st.index[k]; ix != nil {
			ix.demand = d
			st.judge(ix)
		}
	}
}

// foreignStrain divides the pressure fraction for a foreign tag, whose
// hosts the walks leave out outright while others fit, and otherwise once
// its demand reaches the smaller fraction of its supply. Work another
// instance books is judged by every instance from its own replica, and
// each may plan a round taking the tag's hosts down to the margin at once:
// at the fraction itself, three instances filled the hosts of a tag whose
// work then waited (the peer stress farm's pool1, its smallest hosts).
const foreignStrain = 4

// pressured: the tag's demand reaches the fraction f of its supply in cores
// or in memory.
func pressured(ix *tagIndex, f float64) bool {
	d := ix.demand
	if f <= 0 || d.Cores <= 0 && d.Mem <= 0 {
		return false
	}
	return d.Cores > 0 && float64(d.Cores) >= f*float64(ix.supply.Cores) ||
		d.Mem > 0 && float64(d.Mem) >= f*float64(ix.supply.Mem)
}

// judge sets whether the tag is contested and, when that changed, the
// contested count of every host filed in its index, in all the levels the
// host is filed in. Unfiled hosts count theirs when filed (reposition).
func (st *hostState) judge(ix *tagIndex) {
	f := st.fraction
	if ix.foreign {
		f /= foreignStrain
	}
	ix.pressured = pressured(ix, f)
	c := ix.pressured || ix.foreign
	if c == ix.contested {
		return
	}
	ix.contested = c
	d := int32(1)
	if !c {
		d = -1
	}
	ix.levels.Ascend(func(it levelItem) bool {
		it.lv.hosts.Ascend(func(s slot) bool {
			st.recount(s.rec, d)
			return true
		})
		return true
	})
}

// recount moves a filed host's contested count by d in its levels.
func (st *hostState) recount(rec *hostRec, d int32) {
	old := rec.contested
	rec.contested += d
	for _, ix := range rec.idxs {
		if it, ok := ix.levels.Get(levelItem{cores: rec.ixCores}); ok {
			it.lv.count(old, -1)
			it.lv.count(rec.contested, 1)
		}
	}
}

// refresh rebuilds a host's record from its rows and re-files it: its
// indexes when its facility or tags changed, its place when its capacity
// did. A host pinged before cutoff is silent, not offered (zero: none is);
// one that reports again after silence counts as grown, as capacity that
// appeared.
func (st *hostState) refresh(id string, cutoff time.Time) {
	rec := st.hosts[id]
	if rec == nil {
		return
	}
	facility := st.allocs[rec.row.alloc].facility
	var tags []string
	for t, n := range st.hostTags[id] {
		if n > 0 {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	if facility != rec.h.Facility || !slices.Equal(tags, rec.h.Tags) {
		st.topo = true
		st.unfile(rec)
		for _, t := range tags {
			k := tagKey{facility, t}
			ix := st.index[k]
			if ix == nil {
				ix = st.trees.newIndex(k)
				ix.demand, ix.foreign = st.demand[k], st.foreign[k]
				st.index[k] = ix
			}
			ix.n++
			rec.idxs = append(rec.idxs, ix)
		}
	}
	prevBase, wasOffered, wasSilent := rec.base, rec.inTrees, rec.ping.Before(cutoff)
	row := &rec.row
	h := &rec.h
	h.ID, h.Name, h.Facility, h.Alloc = id, row.name, facility, row.alloc
	h.ThreadMode = threadModeOf(row.threadMode)
	h.Tags = tags
	h.Total = match.Resources{Cores: row.cores, Mem: row.mem, GPUs: row.gpus, GPUMem: row.gpuMem}
	rec.base = match.Resources{Cores: row.coresIdle, Mem: row.memIdle, GPUs: row.gpusIdle, GPUMem: row.gpuMemIdle}
	if s := st.statOf[id]; s != nil {
		h.OS, h.MemFree, h.TempFree, h.TempTotal = s.os, s.memFree, s.mcpFree, s.mcpTotal
		rec.base.Mem = min(rec.base.Mem, s.memFree)
		rec.base.GPUMem = min(rec.base.GPUMem, s.gpuMemFree)
		rec.ping, rec.up = s.ping, s.state == "UP"
	} else {
		h.OS, h.MemFree, h.TempFree, h.TempTotal = "", 0, 0, 0
		rec.base.Mem, rec.base.GPUMem = 0, 0
		rec.ping, rec.up = time.Time{}, false
	}
	st.reposition(rec)
	if rec.inTrees && (!wasOffered || wasSilent && !rec.ping.Before(cutoff) ||
		rec.base.Cores > prevBase.Cores || rec.base.Mem > prevBase.Mem ||
		rec.base.GPUs > prevBase.GPUs || rec.base.GPUMem > prevBase.GPUMem) {
		st.grown[id] = struct{}{}
	}
}

// threadModeOf reads host.int_thread_mode as Cuebot does: it compares the
// integer with ALL (1) and VARIABLE (2), so any other value sizes procs as
// AUTO (a plain conversion would wrap 257 around to ALL).
func threadModeOf(n int64) match.ThreadMode {
	switch n {
	case int64(match.ThreadAll), int64(match.ThreadVariable):
		return match.ThreadMode(n)
	}
	return match.ThreadAuto
}

// unfile takes rec out of every index it is in.
func (st *hostState) unfile(rec *hostRec) {
	idxs, filed := rec.idxs, rec.inTrees
	for i, ix := range idxs {
		if filed {
			st.trees.remove(ix, rec, i)
		}
		// Every host filed in an index is counted in it: an index counting
		// none is empty.
		if ix.n--; ix.n <= 0 {
			delete(st.index, ix.key)
		}
	}
	rec.inTrees = false
	rec.idxs, rec.lvs = nil, nil
	if filed {
		// The supply of the tags it left moved.
		for _, ix := range idxs {
			if st.index[ix.key] == ix {
				st.judge(ix)
			}
		}
	}
}

func (st *hostState) drop(id string) {
	if rec := st.hosts[id]; rec != nil {
		st.topo = true
		delete(st.grown, id)
		st.unfile(rec)
		delete(st.held, rec)
		delete(st.hosts, id)
	}
}

func (st *hostState) refreshDirty(cutoff time.Time) {
	for id := range st.dirty {
		st.refresh(id, cutoff)
	}
	clear(st.dirty)
}
