package match

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Order says how the layers of one show take turns.
type Order int8

const (
	// OrderLottery draws layers by a lottery weighted by job priority:
	// priority is a rate, so a layer of priority 2p is drawn about twice as
	// often as one of priority p, and a floor keeps every eligible layer
	// drawing (see lotteryFloorDiv).
	OrderLottery Order = iota
	// OrderStrict is OpenCue's legacy order: the highest priority first, ties
	// in the order the layers were given (the pending queue lists jobs by
	// start time and a job's layers by dispatch order, Cuebot's tie-breaks).
	OrderStrict
)

// Options tunes one planning round.
type Options struct {
	// Now is the time layer.ts_start_after is compared with (this package
	// has no clock); left zero, every layer with a start-after waits.
	Now time.Time
	// Seed makes the lottery deterministic: the same inputs and seed give
	// the same placements.
	Seed int64
	// Policy ranks feasible hosts; nil means BestFit.
	Policy Policy
	// Order is how layers of one show take turns; lottery by default.
	Order Order
	// SelfishServices are services whose threadable frames take all whole
	// idle cores of a host (Cuebot's dispatcher.frame.selfish.services).
	SelfishServices []string
	// MaxPlacements bounds the round; 0 means no bound. Layers the bound cut
	// off wait with ReasonDeferred.
	MaxPlacements int
	// TagFilter, when set, restricts which (facility, tag) pairs of a layer
	// count in this round, so a caller planning one cluster offers a layer
	// only that cluster's hosts. nil counts every tag.
	TagFilter func(facility, tag string) bool
	// Allocs are the allocations of the round's hosts (one for an allocation
	// cluster). Shows draw in order of their subscription tier over them:
	// (cores in use on these allocations + cores placed this round) / (sum
	// of subscription sizes on them), which is Cuebot's tier when the round
	// spans one allocation. A show with no size there draws after every show
	// with one. Allocs must list every allocation of the round's hosts: a
	// layer whose show is at burst on all of them waits without a walk. With
	// none given, shows are ordered by the cores this round gave them.
	Allocs []string
	// Locality ranks a host that recently ran a frame of the layer, then of
	// its job, before others that fit equally well (locality.go).
	Locality bool
	// Memory books the frames of some shows' layers with what their
	// finished frames used (memory.go); the zero value books requests.
	Memory Memory
	// Reservations hold hosts for the layers that reserved them
	// (reserve.go): another layer's frame goes there only as a backfill.
	Reservations *ReservationSet
	// Buffer, when not nil, is where Result.Placements is built (from length
	// 0): a caller done with an earlier round's placements hands the slice
	// back so a round in steady state allocates nothing for its result.
	Buffer []Placement
}

// Result is one round's decisions: the placements, in the order they were
// made, and why each layer left with waiting frames still waits, in the order
// the layers were given.
type Result struct {
	Placements []Placement
	Waits      []Wait
}

const (
	// lotteryFloorDiv sets the lottery floor: every eligible layer of a show
	// holds at least 1/lotteryFloorDiv of the show's mean priority in
	// tickets (and at least one), so a low priority slows a layer down but
	// never starves it under a flood of high-priority work.
	lotteryFloorDiv = 10
	// maxTickets bounds one layer's tickets so sums cannot overflow.
	maxTickets = 1 << 40
	// takeAttempts bounds how often one frame re-walks after Hosts.Take lost
	// its host to a concurrent round.
	takeAttempts = 16
	// diagVisits bounds the walk that explains a no-fit: the nearest host is
	// the nearest among the first diagVisits hosts with idle capacity of each
	// tag.
	diagVisits = 512
)

// Plan runs one planning round: it draws layers in fairness order and places
// their frames one at a time on the host the policy ranks best, checking out
// each placement with hosts.Take, until every layer is placed or waits.
//
// A layer leaves the round at its first failure: within a round capacity only
// shrinks and caps only fill, so what failed once fails again (memoised per
// layer shape, so layers of the same shape fail without a walk). Capacity
// released while the round runs is left to the next round.
//
// Plan is deterministic for the same inputs, index state and Seed. It does
// not modify the layers; the caller drops placed frames once dispatch has
// committed them.
func Plan(layers []*Layer, hosts Hosts, caps Caps, opt Options) Result {
	p := newPlanner(hosts, caps, opt)
	p.init(layers)
	p.run()
	return p.finish()
}

type planner struct {
	hosts  Hosts
	caps   Caps
	opt    Options
	policy Policy
	window int
	allocs []string
	rng    *rand.Rand

	states  []layerState
	shows   map[string]*showState
	heap    []*showState
	jobs    map[string]*capState
	folders map[string]*capState
	limits  map[string]*limitState
	shapes  map[shapeKey]*shapeState

	res Result

	// The walk in progress; visit and diagVisit are bound once so a walk
	// allocates nothing.
	visitFn, diagFn func(Host) bool
	cur             *layerState
	seen            int
	// best, second and spare point into slots and swap, so a visited host is
	// copied once and never escapes to the heap.
	slots               [3]candidate
	best, second, spare *candidate
	found, fallback     bool
	capHit              capKind
	capAlloc            string
	capSize             Resources
	diagSeen            int
	near                candidate
	nearDist            float64
	nearWhy             string
	nearFound           bool
	// keepFallback: the walks with contested hosts keep the GPU host found
	// without them.
	keepFallback bool
	// plain: the search walked the contested hosts too (Walk).
	plain bool
	// warmer is hosts as a WarmWalker when Options.Locality (else nil);
	// warmWon: warmth chose p.best over a host that fit as well.
	warmer        WarmWalker
	warmFn        func(Host) bool
	warmWon       bool
	bestWarmKnown bool
	// resv is Options.Reservations (nil: none); resvRefused: the layer's
	// search passed a reserved host by (resvWhy says why).
	resv        *ReservationSet
	resvRefused bool
	resvWhy     string
	claim       Claim  // the search's, when resv
	walkClaim   *Claim // the claim of the walk under way (nil: none)
}

type candidate struct {
	host Host
	size Resources
	cost float64
	warm Warmth // set by warmSearch only
	ran  Ran
	use  Use
}

type capKind int8

const (
	capNone capKind = iota
	capBurst
	capJob
	capFolder
)

type layerState struct {
	l      *Layer
	sz     *Layer // l as sized: its memory maybe trimmed (memory.go)
	show   *showState
	slot   int // index in show.layers
	next   int // next frame to place
	tags   []string
	job    *capState
	folder *capState
	limits []*limitState
	shape  *shapeState
	min    Resources // what a host must have idle to be walked at all
	lb     int64     // the fewest cores any host could give one frame
	noGPU  bool
	self   bool // runs a selfish service
	// claim is what the layer's claims may use of the hosts the round's
	// reservations hold, known at its first search.
	claim claimKind
	// warmMiss counts the round's warm searches that changed nothing
	// (locality.go).
	warmMiss int8
	done     bool
	waits    bool
	reason   Reason
	detail   string
}

// claimKind is what a layer's claims may use of the held hosts.
type claimKind int8

const (
	claimUnknown claimKind = iota
	claimSome              // its own, or backfills: each held host is judged
	claimNone              // nothing (Claim.all)
)

func (ls *layerState) setWait(r Reason, detail string) {
	ls.waits, ls.reason, ls.detail = true, r, detail
}

type capState struct {
	id string
	c  Cap
}

type limitState struct {
	id    string
	lim   Limit
	found bool
}

type subState struct {
	alloc string
	sub   Subscription
	found bool
}

// shapeKey is everything host feasibility depends on besides the show: two
// layers with equal keys fit exactly the same hosts.
type shapeKey struct {
	facility, tags, os string
	threadable         bool
	min                Resources
}

type shapeState struct {
	failed    bool
	reason    Reason
	detail    string
	plainNone bool // no host without GPUs fits: GPU hosts need not be avoided
	// resv: a layer of the shape found no host but reserved ones it could
	// not backfill (reserve.go, resvFailed).
	resv resvMemo
	// unclaimed: a search of the shape walked again without its claim
	// (search): the shape's later searches walk without one at once, as
	// capacity only shrinks within a round and they would fail the same.
	unclaimed bool
}

type showState struct {
	id      string
	subs    []*subState
	used    int64 // cores in use on the round's allocations plus placed
	size    int64
	tier    float64
	layers  []*layerState
	tickets []int64
	fen     []int64 // Fenwick tree over tickets, 1-based
	total   int64
	live    int
	next    int // strict order cursor
}

func newPlanner(hosts Hosts, caps Caps, opt Options) *planner {
	p := &planner{
		hosts:   hosts,
		caps:    caps,
		opt:     opt,
		policy:  opt.Policy,
		shows:   make(map[string]*showState),
		jobs:    make(map[string]*capState),
		folders: make(map[string]*capState),
		limits:  make(map[string]*limitState),
		shapes:  make(map[shapeKey]*shapeState),
		rng:     rand.New(rand.NewPCG(uint64(opt.Seed), 0x9e3779b97f4a7c15)),
	}
	if p.policy == nil {
		p.policy = BestFit{}
	}
	p.window = max(1, p.policy.Window())
	for _, a := range opt.Allocs {
		if !slices.Contains(p.allocs, a) {
			p.allocs = append(p.allocs, a)
		}
	}
	p.visitFn = p.visit
	p.diagFn = p.diagVisit
	if w, ok := hosts.(WarmWalker); ok && opt.Locality {
		p.warmer, p.warmFn = w, p.visitWarm
	}
	p.best, p.second, p.spare = &p.slots[0], &p.slots[1], &p.slots[2]
	p.resv = opt.Reservations
	return p
}

func (p *planner) init(layers []*Layer) {
	p.states = make([]layerState, 0, len(layers))
	for _, l := range layers {
		if l != nil && len(l.Frames) > 0 {
			p.states = append(p.states, layerState{l: l})
		}
	}
	var frames int
	for i := range p.states {
		ls := &p.states[i]
		l := ls.l
		if !startAfterPassed(l, p.opt.Now) {
			ls.setWait(ReasonStartAfter, "starts after "+l.StartAfter.UTC().Format(time.RFC3339))
			continue
		}
		var counted bool
		ls.tags, counted = p.effectiveTags(l)
		if len(ls.tags) == 0 {
			switch {
			case counted:
				ls.setWait(ReasonNoHost, fmt.Sprintf("tags %q name no host in facility %s", strings.Join(l.Tags, "|"), l.Facility))
			case len(l.Tags) == 0:
				ls.setWait(ReasonNoHost, "the layer has no tags")
			default:
				ls.setWait(ReasonNoHost, "no tag of the layer is in this round")
			}
			continue
		}
		ls.sz = sized(l, p.opt.Memory)
		ls.show = p.show(l.ShowID)
		ls.job = p.capOf(p.jobs, l.JobID, p.caps.Job)
		ls.folder = p.capOf(p.folders, l.FolderID, p.caps.Folder)
		for _, id := range l.Limits {
			ls.limits = append(ls.limits, p.limit(id))
		}
		ls.shape = p.shape(ls.sz, ls.tags)
		ls.min = walkMin(ls.sz)
		ls.lb = coresLowerBound(l)
		ls.noGPU = l.Min.GPUs <= 0
		ls.self = p.selfish(l)
		ls.slot = len(ls.show.layers)
		ls.show.layers = append(ls.show.layers, ls)
		frames += len(l.Frames)
	}
	// Every show with an eligible layer enters the heap once; its order is
	// total (tier, cores in use, id), so the order they enter does not matter.
	for i := range p.states {
		s := p.states[i].show
		if s == nil || s.live != 0 {
			continue
		}
		p.arrange(s)
		p.heap = append(p.heap, s)
	}
	for i := len(p.heap)/2 - 1; i >= 0; i-- {
		p.down(i)
	}
	if p.opt.MaxPlacements > 0 {
		frames = min(frames, p.opt.MaxPlacements)
	}
	if p.opt.Buffer != nil {
		p.res.Placements = p.opt.Buffer[:0]
		return
	}
	p.res.Placements = make([]Placement, 0, min(frames, 1<<16))
}

// effectiveTags are the layer's tags this round counts that name a host;
// counted reports whether any tag passed the filter at all.
func (p *planner) effectiveTags(l *Layer) (tags []string, counted bool) {
	for _, t := range l.Tags {
		if p.opt.TagFilter != nil && !p.opt.TagFilter(l.Facility, t) {
			continue
		}
		counted = true
		if p.hosts.Tagged(l.Facility, t) && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	return tags, counted
}

func (p *planner) show(id string) *showState {
	if s := p.shows[id]; s != nil {
		return s
	}
	s := &showState{id: id}
	for _, a := range p.allocs {
		if ss := p.sub(s, a); ss.found {
			s.used += ss.sub.Cores
			s.size += ss.sub.Size
		}
	}
	s.tier = p.tierOf(s)
	p.shows[id] = s
	return s
}

// sub is the show's subscription on an allocation, fetched once per round
// and carrying this round's placements.
func (p *planner) sub(s *showState, alloc string) *subState {
	for _, ss := range s.subs {
		if ss.alloc == alloc {
			return ss
		}
	}
	sub, ok := p.caps.Subscription(s.id, alloc)
	ss := &subState{alloc: alloc, sub: sub, found: ok}
	s.subs = append(s.subs, ss)
	return ss
}

func (p *planner) tierOf(s *showState) float64 {
	switch {
	case len(p.allocs) == 0:
		return 0
	case s.size <= 0:
		return math.Inf(1)
	}
	return float64(s.used) / float64(s.size)
}

func (p *planner) capOf(m map[string]*capState, id string, get func(string) Cap) *capState {
	if c := m[id]; c != nil {
		return c
	}
	c := &capState{id: id, c: get(id)}
	m[id] = c
	return c
}

func (p *planner) limit(id string) *limitState {
	if l := p.limits[id]; l != nil {
		return l
	}
	lim, ok := p.caps.Limit(id)
	l := &limitState{id: id, lim: lim, found: ok}
	p.limits[id] = l
	return l
}

func (p *planner) shape(l *Layer, tags []string) *shapeState {
	k := shapeKey{facility: l.Facility, tags: strings.Join(tags, "|"), os: l.OS, threadable: l.Threadable, min: l.Min}
	if s := p.shapes[k]; s != nil {
		return s
	}
	s := &shapeState{}
	p.shapes[k] = s
	return s
}

func (p *planner) selfish(l *Layer) bool {
	for _, s := range l.Services {
		if slices.Contains(p.opt.SelfishServices, s) {
			return true
		}
	}
	return false
}

// walkMin is the least a host must have idle for Size to possibly accept
// the layer, Cuebot's host minimums included, so the index skips the rest.
func walkMin(l *Layer) Resources {
	m := l.Min
	if m.Cores <= 0 {
		m.Cores = 1 - m.Cores // a fully idle host with more than -req cores
	}
	m.Cores = max(m.Cores, minIdleCores)
	m.Mem = max(m.Mem, minIdleMem)
	m.GPUs = max(m.GPUs, 0)
	m.GPUMem = max(m.GPUMem, 0)
	return m
}

// coresLowerBound is the fewest cores Size can give one frame of l on any
// host, for the cap checks made before walking.
func coresLowerBound(l *Layer) int64 {
	req := l.Min.Cores
	switch {
	case req <= 0:
		return 1
	case req < 100:
		return req
	}
	lb := req
	if l.CoresMax > 0 && l.CoresMax < lb {
		lb = l.CoresMax
	}
	if !l.Threadable && lb > 100 {
		lb = 100
	}
	return lb
}

// arrange prepares a show's draw: the lottery's tickets, or the strict order.
func (p *planner) arrange(s *showState) {
	s.live = len(s.layers)
	if p.opt.Order == OrderStrict {
		slices.SortStableFunc(s.layers, func(a, b *layerState) int { return cmp.Compare(b.l.Priority, a.l.Priority) })
		for i, ls := range s.layers {
			ls.slot = i
		}
		return
	}
	n := len(s.layers)
	s.tickets = make([]int64, n)
	s.fen = make([]int64, n+1)
	var sum int64
	for i, ls := range s.layers {
		s.tickets[i] = min(max(ls.l.Priority, 0), maxTickets)
		sum += s.tickets[i]
	}
	floor := max(1, sum/int64(n*lotteryFloorDiv))
	for i := range s.tickets {
		s.tickets[i] = max(s.tickets[i], floor)
		s.total += s.tickets[i]
		j := i + 1
		s.fen[j] += s.tickets[i]
		if k := j + j&-j; k <= n {
			s.fen[k] += s.fen[j]
		}
	}
}

// draw picks the show's next layer.
func (p *planner) draw(s *showState) *layerState {
	if p.opt.Order == OrderStrict {
		for s.layers[s.next].done {
			s.next++
		}
		return s.layers[s.next]
	}
	r := p.rng.Int64N(s.total)
	// Fenwick descent: the first slot whose prefix sum exceeds r.
	pos := 0
	for step := 1 << (bits.Len(uint(len(s.layers))) - 1); step > 0; step >>= 1 {
		if next := pos + step; next <= len(s.layers) && s.fen[next] <= r {
			pos = next
			r -= s.fen[next]
		}
	}
	return s.layers[pos]
}

// retire takes a layer out of its show's draw.
func (p *planner) retire(ls *layerState) {
	s := ls.show
	ls.done = true
	s.live--
	if p.opt.Order == OrderStrict {
		return
	}
	t := s.tickets[ls.slot]
	s.total -= t
	for j := ls.slot + 1; j <= len(s.layers); j += j & -j {
		s.fen[j] -= t
	}
}

func (p *planner) run() {
	for len(p.heap) > 0 {
		if p.opt.MaxPlacements > 0 && len(p.res.Placements) >= p.opt.MaxPlacements {
			return
		}
		s := p.heap[0]
		ls := p.draw(s)
		if !p.placeOne(ls) || ls.next == len(ls.l.Frames) {
			p.retire(ls)
		}
		if s.live == 0 {
			p.pop()
		} else {
			p.down(0) // the show's tier only rose
		}
	}
}

func (p *planner) finish() Result {
	for i := range p.states {
		ls := &p.states[i]
		if !ls.waits && ls.next < len(ls.l.Frames) {
			ls.setWait(ReasonDeferred, fmt.Sprintf("the round stopped at %d placements", p.opt.MaxPlacements))
		}
		if ls.waits {
			p.res.Waits = append(p.res.Waits, Wait{Layer: ls.l, Reason: ls.reason, Detail: ls.detail})
		}
	}
	return p.res
}

// placeOne places the layer's next frame, or records why it waits.
func (p *planner) placeOne(ls *layerState) bool {
	if ls.shape.failed {
		ls.setWait(ls.shape.reason, ls.shape.detail)
		return false
	}
	if detail := p.capsBefore(ls); detail != "" {
		ls.setWait(ReasonCap, detail)
		return false
	}
	if p.resvFailed(ls) {
		return false
	}
	for range takeAttempts {
		p.search(ls)
		if !p.found {
			p.explain(ls)
			return false
		}
		if p.hosts.Take(p.best.host.ID, p.best.size) {
			p.commit(ls)
			return true
		}
	}
	ls.setWait(ReasonCapacity, "the hosts that fit kept being taken by concurrent rounds")
	return false
}

// capsBefore checks the caps that do not depend on the host with the
// smallest proc the layer could get; "" when none stops it.
func (p *planner) capsBefore(ls *layerState) string {
	for _, lim := range ls.limits {
		if !limitAllows(lim.lim, lim.found) {
			return fmt.Sprintf("limit %s at its max %d", lim.id, lim.lim.Max)
		}
	}
	least := Resources{Cores: ls.lb, GPUs: ls.l.Min.GPUs}
	if !JobAllows(ls.job.c, least) {
		return capDetail("job", ls.job, least)
	}
	if !FolderAllows(ls.folder.c, least) {
		return capDetail("folder", ls.folder, least)
	}
	if len(p.allocs) > 0 {
		for _, a := range p.allocs {
			if ss := p.sub(ls.show, a); BurstAllows(ss.sub, ss.found, ls.lb) {
				return ""
			}
		}
		return fmt.Sprintf("subscription burst of show %s on allocations %s", ls.show.id, strings.Join(p.allocs, ","))
	}
	return ""
}

func capDetail(kind string, c *capState, size Resources) string {
	// A folder's negative max is unlimited; a job's refuses (rules.go).
	if (kind != "folder" || c.c.MaxCores >= 0) && !atMost(c.c.Cores, size.Cores, c.c.MaxCores) {
		return fmt.Sprintf("%s %s max cores %d (%d in use)", kind, c.id, c.c.MaxCores, c.c.Cores)
	}
	return fmt.Sprintf("%s %s max gpus %d (%d in use)", kind, c.id, c.c.MaxGPUs, c.c.GPUs)
}

// search walks the layer's tag indexes and leaves the best candidate in
// p.best (p.found).
//
// Hosts contested for a tag (they carry another tag whose waiting work needs
// them) are kept for that work: the first walks leave them out, and only
// when no other host fits do the walks run again with them, so a layer never
// waits while capacity exists. A host without GPUs comes first either way; a
// GPU host found without the contested hosts stays preferred to one among
// them.
//
// With reservations, the walks may leave out the hosts held for other
// layers that this one may not backfill (Claim). A search that so finds
// nothing walks again with them, as what it passed by (a cap, a
// reservation) explains the wait and feeds the shape's memos; the shape's
// later searches then walk with them at once (shapeState.unclaimed).
func (p *planner) search(ls *layerState) {
	p.cur = ls
	var claim *Claim
	if p.resv != nil && !ls.shape.unclaimed {
		if ls.claim == claimUnknown {
			ls.claim = claimSome
			if p.resv.Claim(ls.l, p.opt.Now).all {
				ls.claim = claimNone
			}
		}
		p.claim = Claim{Set: p.resv, Layer: ls.l, Now: p.opt.Now, all: ls.claim == claimNone}
		claim = &p.claim
	}
	p.walk(ls, claim)
	if !p.found && claim != nil && claim.LeftOut {
		ls.shape.unclaimed = true
		p.walk(ls, nil)
	}
	if !p.found && p.fallback {
		p.best, p.second, p.found = p.second, p.best, true
		if p.capHit == capNone {
			ls.shape.plainNone = true
		}
	}
	p.warmSearch(ls)
}

// walk is search's walks of the layer's tag indexes.
func (p *planner) walk(ls *layerState, claim *Claim) {
	p.walkClaim = claim
	p.found, p.fallback, p.keepFallback, p.plain = false, false, false, false
	p.capHit, p.capAlloc = capNone, ""
	p.resvRefused = false
	skipped := false
	for _, t := range ls.tags {
		p.seen = 0
		if p.hosts.WalkUncontested(ls.l.Facility, t, ls.min, claim, p.visitFn) {
			skipped = true
		}
	}
	if !p.found && skipped {
		p.keepFallback, p.plain = p.fallback, true
		for _, t := range ls.tags {
			p.seen = 0
			p.hosts.Walk(ls.l.Facility, t, ls.min, claim, p.visitFn)
		}
	}
	p.walkClaim = nil
}

// visit offers one host of a walk; it returns false when the policy has seen
// enough candidates.
func (p *planner) visit(h Host) bool {
	ls := p.cur
	l := ls.sz
	c := p.spare
	c.host = h
	hp := &c.host
	if !hostMinimums(hp) || !osMatch(l.OS, hp.OS) || !threadModeAllows(hp, l) {
		return true
	}
	var ok bool
	if c.size, ok = Size(hp, l, ls.self); !ok || !fitsIdle(hp, c.size) || !p.capsOn(ls, hp, c.size) ||
		p.resv != nil && !p.reservedOK(ls, c) {
		return true
	}
	c.cost = p.policy.Cost(hp, c.size)
	if ls.noGPU && hp.Total.GPUs > 0 && !ls.shape.plainNone {
		if !p.fallback || !p.keepFallback && better(c, p.second) {
			p.second, p.spare = c, p.second
			p.fallback = true
		}
		return true
	}
	if !p.found || better(c, p.best) {
		p.best, p.spare = c, p.best
		p.found = true
	}
	p.seen++
	return p.seen < p.window
}

// better: lower cost, then the earlier host in index order.
func better(c, o *candidate) bool {
	if c.cost != o.cost {
		return c.cost < o.cost
	}
	h, g := &c.host, &o.host
	if h.Idle.Cores != g.Idle.Cores {
		return h.Idle.Cores < g.Idle.Cores
	}
	if h.Idle.Mem != g.Idle.Mem {
		return h.Idle.Mem < g.Idle.Mem
	}
	return h.ID < g.ID
}

// capsOn checks the caps a proc of size on h would count against.
func (p *planner) capsOn(ls *layerState, h *Host, size Resources) bool {
	kind := capNone
	if ss := p.sub(ls.show, h.Alloc); !BurstAllows(ss.sub, ss.found, size.Cores) {
		kind = capBurst
	} else if !JobAllows(ls.job.c, size) {
		kind = capJob
	} else if !FolderAllows(ls.folder.c, size) {
		kind = capFolder
	}
	if kind == capNone {
		return true
	}
	if p.capHit == capNone {
		p.capHit, p.capAlloc, p.capSize = kind, h.Alloc, size
	}
	return false
}

func (p *planner) commit(ls *layerState) {
	b := p.best
	l := ls.l
	// A Placement is large: filled in place, not built apart and copied.
	ps := slices.Grow(p.res.Placements, 1)
	ps = ps[:len(ps)+1]
	pl := &ps[len(ps)-1]
	pl.Layer, pl.Frame, pl.Host, pl.Size = l, l.Frames[ls.next], b.host, b.size
	pl.Warm, pl.Ran, pl.Use = Cold, Ran{}, b.use
	if p.warmWon {
		pl.Warm, pl.Ran = b.warm, b.ran
	}
	p.res.Placements = ps
	ls.next++
	ss := p.sub(ls.show, b.host.Alloc)
	ss.sub.Cores += b.size.Cores
	ss.sub.GPUs += b.size.GPUs
	ls.job.c.Cores += b.size.Cores
	ls.job.c.GPUs += b.size.GPUs
	ls.folder.c.Cores += b.size.Cores
	ls.folder.c.GPUs += b.size.GPUs
	for _, lim := range ls.limits {
		lim.lim.Running++
	}
	s := ls.show
	s.used += b.size.Cores
	s.tier = p.tierOf(s)
}

// explain records why the layer's last walk found no host.
func (p *planner) explain(ls *layerState) {
	switch p.capHit {
	case capBurst:
		ss := p.sub(ls.show, p.capAlloc)
		ls.setWait(ReasonCap, fmt.Sprintf("subscription burst of show %s on allocation %s: %d of %d cores in use",
			ls.show.id, p.capAlloc, ss.sub.Cores, ss.sub.Burst))
		return
	case capJob:
		ls.setWait(ReasonCap, capDetail("job", ls.job, p.capSize))
		return
	case capFolder:
		ls.setWait(ReasonCap, capDetail("folder", ls.folder, p.capSize))
		return
	}
	if p.resvRefused {
		// Capacity held for another layer (reserve.go): the failure is
		// the shape's only for layers that could backfill no more.
		p.resvFail(ls)
		return
	}
	sh := ls.shape
	sh.failed = true
	sh.reason, sh.detail = p.diagnose(ls)
	ls.setWait(sh.reason, sh.detail)
}

// diagnose tells capacity (no host of the layer's tags has any idle
// capacity) from no-fit (some has, of the wrong shape), naming the nearest
// host for a no-fit.
func (p *planner) diagnose(ls *layerState) (Reason, string) {
	p.cur = ls
	p.nearFound = false
	least := Resources{Cores: minIdleCores, Mem: minIdleMem}
	for _, t := range ls.tags {
		p.diagSeen = 0
		p.hosts.Walk(ls.l.Facility, t, least, nil, p.diagFn)
	}
	if !p.nearFound {
		return ReasonCapacity, fmt.Sprintf("no host tagged %s has idle capacity", strings.Join(ls.tags, "|"))
	}
	h := &p.near.host
	d := fmt.Sprintf("nearest host %s: idle %s, needs %s", h.Name, fmtRes(h.Idle), fmtRes(ls.min))
	if p.nearWhy != "" {
		d += "; " + p.nearWhy
	}
	return ReasonNoFit, d
}

func fmtRes(r Resources) string {
	return fmt.Sprintf("cores=%d mem=%d gpus=%d gpu_mem=%d", r.Cores, r.Mem, r.GPUs, r.GPUMem)
}

// diagVisit scores how far a host is from taking the layer: the shortfall
// of each resource as a share of the need, plus one for each rule it breaks.
func (p *planner) diagVisit(h Host) bool {
	ls := p.cur
	l := ls.sz
	var why []string
	d := shortfall(ls.min.Cores, h.Idle.Cores) + shortfall(ls.min.Mem, h.Idle.Mem) +
		shortfall(ls.min.GPUs, h.Idle.GPUs) + shortfall(ls.min.GPUMem, h.Idle.GPUMem)
	if !hostMinimums(&h) {
		d, why = d+1, append(why, "below Cuebot's host minimums")
	}
	if !osMatch(l.OS, h.OS) {
		d, why = d+1, append(why, fmt.Sprintf("os %q is not %q", h.OS, l.OS))
	}
	if !threadModeAllows(&h, l) {
		d, why = d+1, append(why, "thread mode refuses the layer")
	}
	if d == 0 {
		if _, ok := Size(&h, l, ls.self); !ok {
			d, why = 0.5, append(why, "Cuebot's sizing refuses the layer")
		}
	}
	if !p.nearFound || d < p.nearDist {
		p.near = candidate{host: h}
		p.nearDist, p.nearWhy, p.nearFound = d, strings.Join(why, ", "), true
	}
	p.diagSeen++
	return p.diagSeen < diagVisits
}

func shortfall(need, have int64) float64 {
	if need <= have || need <= 0 {
		return 0
	}
	return float64(need-have) / float64(need)
}

// The show heap: lowest tier first, then fewest cores in use, then show id.

func (p *planner) less(i, j int) bool {
	a, b := p.heap[i], p.heap[j]
	if a.tier != b.tier {
		return a.tier < b.tier
	}
	if a.used != b.used {
		return a.used < b.used
	}
	return a.id < b.id
}

func (p *planner) swap(i, j int) {
	p.heap[i], p.heap[j] = p.heap[j], p.heap[i]
}

func (p *planner) down(i int) {
	n := len(p.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && p.less(r, l) {
			m = r
		}
		if !p.less(m, i) {
			return
		}
		p.swap(i, m)
		i = m
	}
}

func (p *planner) pop() {
	n := len(p.heap) - 1
	p.swap(0, n)
	p.heap = p.heap[:n]
	p.down(0)
}
