package match

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Reservations with backfill (issue 15). A layer that cannot fit (it waits
// for capacity or no-fit, not for a cap) and has waited long enough gets a
// reservation: the hosts it may use that are expected to free enough for
// one of its frames soonest, each with the time that is expected to happen
// (Reserve). A reserved host takes a frame of another layer only when that
// frame is expected to end before the reservation starts (EASY backfill),
// never when its run time is unknown (Backfill); the reserving layer books
// on it as on any host. A reservation never overrides a cap: the layer
// holding it passes every cap check there as anywhere.

// Runs are the mean run times of the finished frames a layer's expected run
// is drawn from (Cuebot's layer_usage and job_usage: clock time of the
// successes over their count); 0 where none finished.
type Runs struct {
	Layer, Job, Service time.Duration
}

// ExpectedRun is how long a frame of l is expected to run: the mean of its
// layer's finished frames, else its job's, else its service's; from names
// which, "" with ok false when none is known.
func ExpectedRun(l *Layer) (d time.Duration, from string, ok bool) { return l.Runs.Expected() }

// Expected is ExpectedRun of a layer with these runs.
func (r Runs) Expected() (d time.Duration, from string, ok bool) {
	switch {
	case r.Layer > 0:
		return r.Layer, "layer", true
	case r.Job > 0:
		return r.Job, "job", true
	case r.Service > 0:
		return r.Service, "service", true
	}
	return 0, "", false
}

// FillServiceRuns gives each layer whose service's mean run is unknown the
// mean run of the finished frames of the layers given that run the same
// (first) service, each layer's mean weighted by its frames finished
// (History.Finished): Cuebot keeps no run times per service, and the
// pending layers of a round are the farm's current work of each service.
func FillServiceRuns(layers []*Layer) {
	type sum struct{ n, total float64 }
	sums := map[string]*sum{}
	for _, l := range layers {
		if len(l.Services) == 0 || l.Runs.Layer <= 0 || l.History.Finished <= 0 {
			continue
		}
		s := sums[l.Services[0]]
		if s == nil {
			s = &sum{}
			sums[l.Services[0]] = s
		}
		s.n += float64(l.History.Finished)
		s.total += float64(l.History.Finished) * float64(l.Runs.Layer)
	}
	for _, l := range layers {
		if len(l.Services) == 0 || l.Runs.Service > 0 {
			continue
		}
		if s := sums[l.Services[0]]; s != nil {
			l.Runs.Service = time.Duration(s.total / s.n)
		}
	}
}

// Reservation holds one host for a frame of a layer.
type Reservation struct {
	Layer     string // pk_layer of the reserving layer
	LayerName string
	Host      string // pk_host
	HostName  string
	// Start is when the host is expected to have room for the frame; zero
	// when a run time it depends on is unknown, and then nothing is
	// backfilled there.
	Start time.Time
	Made  time.Time
}

// Use is what a placement made of a reserved host.
type Use int8

const (
	UseNone     Use = iota
	UseHonoured     // the reserving layer placed a frame on its host
	UseBackfill     // another layer's frame, expected to end before the start
)

// CanBackfill reports whether a frame of l may run on a host r holds at
// now: only when its expected run is known and ends by r's start (known).
func CanBackfill(l *Layer, r *Reservation, now time.Time) bool {
	d, _, known := l.Runs.Expected()
	return known && !r.Start.IsZero() && !now.Add(d).After(r.Start)
}

// Backfill is CanBackfill, with which way and why for explain and the wait
// details (it formats: matching calls it for a refusal it reports only).
func Backfill(l *Layer, r *Reservation, now time.Time) (ok bool, why string) {
	d, from, known := ExpectedRun(l)
	switch {
	case !known:
		return false, fmt.Sprintf("host %s is reserved for layer %s; not backfilled: no finished frame of the layer, its job or its service gives an expected run",
			r.HostName, r.LayerName)
	case r.Start.IsZero():
		return false, fmt.Sprintf("host %s is reserved for layer %s from an unknown start; not backfilled", r.HostName, r.LayerName)
	case now.Add(d).After(r.Start):
		return false, fmt.Sprintf("host %s is reserved for layer %s from %s; not backfilled: its expected run %s (%s mean) ends after",
			r.HostName, r.LayerName, r.Start.UTC().Format(time.RFC3339), d.Round(time.Second), from)
	}
	return true, fmt.Sprintf("backfilled on host %s, reserved for layer %s from %s: its expected run %s (%s mean) ends before",
		r.HostName, r.LayerName, r.Start.UTC().Format(time.RFC3339), d.Round(time.Second), from)
}

// Claim is a layer's search of the host index with the round's
// reservations: the index may leave out of its walks the hosts Set holds
// that the claim refuses (Refuses), as matching would refuse each one it
// was offered, and then sets LeftOut. Held hosts mostly stay idle, so
// without it every walk that reached the idle hosts met every one of them
// (BENCHMARKS.md, "Every feature on"). An index that leaves nothing out is
// as right, only slower.
type Claim struct {
	Set   *ReservationSet
	Layer *Layer
	Now   time.Time
	// LeftOut is set by a walk that left out a host the claim refuses.
	// Kept says, for the walk under way, whether its index was marked with
	// Set, so that it leaves out every such host it meets (package cache);
	// such a walk sets At, before each host it offers, to that host's
	// reservation in Set (nil: none), which spares matching looking it up.
	LeftOut, Kept bool
	At            *Reservation
	// all: the claim refuses every reservation of Set (Set.Claim), so a
	// walk may leave a held host out without reading its reservation.
	all bool
}

// Claim is a claim of l on the set at now, knowing whether it refuses
// every reservation of the set (RefusesAll): l holds none, none has
// expired, and l's expected run ends after every known start.
func (s *ReservationSet) Claim(l *Layer, now time.Time) Claim {
	c := Claim{Set: s, Layer: l, Now: now}
	if s == nil || s.reserving[l.ID] || !now.IsZero() && now.After(s.firstRef.Add(ReserveMargin)) { // one expired
		return c
	}
	d, _, known := l.Runs.Expected()
	c.all = !known || s.lastStart.IsZero() || now.Add(d).After(s.lastStart)
	return c
}

// RefusesAll reports whether the claim refuses every host its set holds.
func (c *Claim) RefusesAll() bool { return c.all }

// Refuses reports whether the claim's layer may not place a frame on a
// host r holds (placing).
func (c *Claim) Refuses(r *Reservation) bool {
	_, ok := placing(c.Layer, r, c.Now)
	return !ok
}

// placing says whether a frame of l may go on a host r holds (nil: none) at
// now, and what placing it there would be: r is expired (UseNone), its own
// (UseHonoured), or the frame is expected to end before r's start
// (UseBackfill). The one rule of matching's walks (Claim) and its
// candidates (reservedOK).
func placing(l *Layer, r *Reservation, now time.Time) (Use, bool) {
	switch {
	case r == nil || Expired(r, now):
		return UseNone, true
	case r.Layer == l.ID:
		return UseHonoured, true
	case CanBackfill(l, r, now):
		return UseBackfill, true
	}
	return UseNone, false
}

// reservedOK checks a candidate host against the round's reservations
// (callers test p.resv first: a round without any pays no call); it
// records in c.use what placing there would be, and the first refusal for
// the layer's wait detail.
func (p *planner) reservedOK(ls *layerState, c *candidate) bool {
	var r *Reservation
	if wc := p.walkClaim; wc != nil && wc.Kept {
		r = wc.At
	} else {
		r, _ = p.resv.On(c.host.ID)
	}
	var ok bool
	if c.use, ok = placing(ls.l, r, p.opt.Now); ok {
		return true
	}
	if !p.resvRefused {
		_, p.resvWhy = Backfill(ls.l, r, p.opt.Now)
		p.resvRefused = true
	}
	return false
}

// Expired reports whether r is ReserveMargin past its start (its making,
// for an unknown start) at now: its owner drops it at its next planning,
// and until then nobody honours it, so a reservation whose owner stopped
// planning (its cluster idle, or owned by nobody) holds no host for long.
func Expired(r *Reservation, now time.Time) bool {
	return !now.IsZero() && now.After(r.due().Add(ReserveMargin))
}

// due is when r is due to be honoured, what its margin counts from: its
// start, or its making for an unknown start.
func (r *Reservation) due() time.Time {
	if r.Start.IsZero() {
		return r.Made
	}
	return r.Start
}

// resvMemo is a shape's failure to find a host other than reserved ones it
// could not backfill: a later layer of the shape fails the same way unless
// it holds a reservation itself or is expected to run shorter (capacity
// only shrinks within a round). Without it every layer of a shape walks
// the index again, which on a busy farm made rounds several times dearer.
type resvMemo struct {
	failed bool
	run    time.Duration // the expected run it failed with; maxRun unknown
	detail string
}

const maxRun = time.Duration(math.MaxInt64)

// runOf is l's expected run, maxRun when unknown.
func runOf(l *Layer) time.Duration {
	if d, _, ok := l.Runs.Expected(); ok {
		return d
	}
	return maxRun
}

// resvFail records that the layer's search failed only past reserved
// hosts.
func (p *planner) resvFail(ls *layerState) {
	m := &ls.shape.resv
	if run := runOf(ls.l); !m.failed || run < m.run {
		m.failed, m.run, m.detail = true, run, p.resvWhy
	}
	ls.setWait(ReasonCapacity, p.resvWhy)
}

// resvFailed reports whether the layer fails as a layer of its shape did:
// it holds no reservation and runs no shorter.
func (p *planner) resvFailed(ls *layerState) bool {
	m := &ls.shape.resv
	if !m.failed || p.resv.Holds(ls.l.ID) || runOf(ls.l) < m.run {
		return false
	}
	ls.setWait(ReasonCapacity, m.detail)
	return true
}

// ReservationSet is reservations by host, built once and shared, read
// only, by the rounds that honour them (Options.Reservations) and the
// plannings that keep off their hosts (ReserveOptions.Elsewhere): a busy
// farm's rounds each indexing hundreds of them spent more than matching.
type ReservationSet struct {
	list      []Reservation
	byHost    map[string]*Reservation
	reserving map[string]bool // the layers holding any
	// firstRef is the earliest a reservation of the set is due
	// (Reservation.due, what Expired counts from); lastStart the latest
	// known start (zero: none known).
	firstRef, lastStart time.Time
}

// NewReservationSet indexes rs (one a host: the first stands); nil when
// there are none.
func NewReservationSet(rs []Reservation) *ReservationSet {
	if len(rs) == 0 {
		return nil
	}
	s := &ReservationSet{list: rs, byHost: make(map[string]*Reservation, len(rs)), reserving: map[string]bool{}}
	for i := range rs {
		r := &rs[i]
		if _, dup := s.byHost[r.Host]; dup {
			continue
		}
		s.byHost[r.Host] = r
		s.reserving[r.Layer] = true
		if due := r.due(); len(s.byHost) == 1 || due.Before(s.firstRef) {
			s.firstRef = due
		}
		if r.Start.After(s.lastStart) {
			s.lastStart = r.Start
		}
	}
	return s
}

// On is the reservation of a host.
func (s *ReservationSet) On(host string) (*Reservation, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.byHost[host]
	return r, ok
}

// Holds reports whether the layer holds any reservation.
func (s *ReservationSet) Holds(layer string) bool { return s != nil && s.reserving[layer] }

// All is every reservation of the set, not to be modified.
func (s *ReservationSet) All() []Reservation {
	if s == nil {
		return nil
	}
	return s.list
}

// Proc is a frame running on a host, as reservations judge when it ends.
type Proc struct {
	Size    Resources
	Started time.Time
	Run     time.Duration // expected run (ExpectedRun of its layer); 0 unknown
}

// end is when p is expected to end, zero when unknown. A frame already
// past its expected run has shown it runs long: it is expected to take half
// its expected run more from now (not to end at once, which would make a
// host of overdue frames look free).
func (p Proc) end(now time.Time) time.Time {
	if p.Run <= 0 {
		return time.Time{}
	}
	if e := p.Started.Add(p.Run); e.After(now) {
		return e
	}
	return now.Add(p.Run / 2)
}

// Running is what reservations read of the hosts beyond the index, which
// offers only hosts with idle capacity (the simulator implements it, and
// the host cache over the replica's procs).
type Running interface {
	// AllHosts visits every host of the facility carrying tag that is up
	// and open, whatever its idle capacity, until visit returns false.
	AllHosts(facility, tag string, visit func(Host) bool)
	// Host is one host as AllHosts would visit it; false when it is not.
	Host(hostID string) (Host, bool)
	// Procs are the frames running on the host.
	Procs(hostID string) []Proc
}

// Waiting is a layer a round left waiting for capacity or no-fit, and since
// when it has waited so, without a break.
type Waiting struct {
	Layer *Layer
	Since time.Time
}

// ReserveOptions tune Reserve.
type ReserveOptions struct {
	Now time.Time
	// After is how long a layer of the mean priority of those waiting waits
	// before it reserves (Threshold).
	After time.Duration
	// Max bounds the layers holding reservations at once; 0: MaxReserving.
	Max int
	// Margin is how long past its start a reservation not yet honoured is
	// kept (or past its making, for an unknown start); 0: ReserveMargin.
	Margin time.Duration
	// TagFilter and Memory are the round's (Options).
	TagFilter func(facility, tag string) bool
	Memory    Memory
	// Elsewhere are every cluster's reservations: their hosts are not
	// reserved again, but for the planning's own (prev).
	Elsewhere *ReservationSet
}

const (
	// MaxReserving is how many layers hold reservations at once by
	// default: a few, so reserved hosts held idle stay a small share of a
	// farm and a round's host walks for them stay few.
	MaxReserving = 8
	// MaxHostsPerLayer bounds the hosts one layer reserves, whatever its
	// waiting frames: reserved hosts refuse most work, and a layer of
	// hundreds of frames reserving a host each held a busy farm's hosts from
	// everything else (and made every walk of the index long).
	MaxHostsPerLayer = 8
	// ReserveMargin is how late a reservation may be before it is dropped
	// (and made again if its layer still waits): run times vary about their
	// mean.
	ReserveMargin = 10 * time.Minute
)

// Threshold is how long l waits before it reserves: after for a layer of
// the mean priority of those waiting (mean), after*mean/priority for a
// higher one, never less than a quarter of after; a lower priority waits
// after.
func Threshold(l *Layer, mean float64, after time.Duration) time.Duration {
	if l.Priority <= 0 || mean <= 0 || float64(l.Priority) <= mean {
		return after
	}
	return max(after/4, time.Duration(float64(after)*mean/float64(l.Priority)))
}

// Reserve plans one cluster's reservations before a round. It keeps those
// of prev whose layer still has waiting frames (live: each layer of the
// round and how many frames it waits with), at most one host per such
// frame, until their start plus the margin passes. A layer of waiting past
// its Threshold that holds none, highest priority first while fewer than
// Max layers hold any, gets the hosts expected to have room for its frames
// soonest; one that holds some trades the latest of them for a host with
// room now, should one have emptied (before the round, so narrower work does
// not draw it first). made is the reservations new this time.
//
// Hosts with room now are found by a walk of the index (hosts); judging
// when busy hosts will have room reads every host of a tag and its frames
// (running), which a caller does only now and then: with running nil,
// Reserve keeps, drops and trades for hosts with room now, and works out
// no start. judged reports whether it read running.
func Reserve(prev []Reservation, live map[string]int64, waiting []Waiting, hosts Hosts, running Running,
	opt ReserveOptions) (next, made []Reservation, judged bool) {
	if opt.Max <= 0 {
		opt.Max = MaxReserving
	}
	if opt.Margin <= 0 {
		opt.Margin = ReserveMargin
	}
	// Each layer reserves a host per waiting frame, MaxHostsPerLayer at most.
	want := make(map[string]int64, len(live))
	for id, n := range live {
		want[id] = min(n, MaxHostsPerLayer)
	}
	live = want
	held := map[string]int64{} // hosts kept per layer
	own := make(map[string]bool, len(prev))
	for _, r := range prev {
		own[r.Host] = true
	}
	// taken: hosts this planning holds (true) or let go (false), else
	// those another cluster holds.
	taken := map[string]bool{}
	isTaken := func(host string) bool {
		if t, ok := taken[host]; ok {
			return t
		}
		_, other := opt.Elsewhere.On(host)
		return other && !own[host]
	}
	waits := make(map[string]*Layer, len(waiting))
	for _, w := range waiting {
		waits[w.Layer.ID] = w.Layer
	}
	for _, r := range prev {
		if held[r.Layer] >= live[r.Layer] || opt.Now.After(r.due().Add(opt.Margin)) || isTaken(r.Host) {
			continue
		}
		if l := waits[r.Layer]; l != nil && r.Start.IsZero() && running != nil {
			r.Start, judged = startNow(r, l, running, opt), true
		}
		held[r.Layer]++
		taken[r.Host] = true
		next = append(next, r)
	}
	var mean float64
	for _, w := range waiting {
		mean += float64(max(w.Layer.Priority, 0))
	}
	if len(waiting) > 0 {
		mean /= float64(len(waiting))
	}
	due := slices.DeleteFunc(slices.Clone(waiting), func(w Waiting) bool {
		return live[w.Layer.ID] <= 0 || opt.Now.Sub(w.Since) < Threshold(w.Layer, mean, opt.After)
	})
	slices.SortFunc(due, func(a, b Waiting) int {
		return cmp.Or(cmp.Compare(b.Layer.Priority, a.Layer.Priority), a.Since.Compare(b.Since),
			cmp.Compare(a.Layer.ID, b.Layer.ID))
	})
	fresh := map[string]bool{} // hosts reserved by this call
	reserve := func(w Waiting, c freeing, at int) {
		r := Reservation{Layer: w.Layer.ID, LayerName: w.Layer.Name, Host: c.host.ID, HostName: c.host.Name,
			Start: c.start, Made: opt.Now}
		taken[r.Host], fresh[r.Host] = true, true
		if at >= 0 {
			taken[next[at].Host] = false
			next[at] = r
		} else {
			held[r.Layer]++
			next = append(next, r)
		}
		made = append(made, r)
	}
	for _, w := range due {
		id := w.Layer.ID
		switch {
		case held[id] > 0:
			// A host with room now is better than the latest of its own
			// (one late is the latest it could be: it has no room yet).
			for _, c := range roomNow(w.Layer, live[id], hosts, isTaken, opt) {
				at := -1
				if held[id] >= live[id] {
					if at = latest(next, id, fresh); at < 0 {
						break
					}
				}
				reserve(w, c, at)
			}
		case len(held) >= opt.Max || running == nil:
			// A host with room now is taken this round: the bound is on
			// the hosts held waiting.
			for _, c := range roomNow(w.Layer, live[id], hosts, isTaken, opt) {
				reserve(w, c, -1)
			}
		default:
			judged = true
			for _, c := range soonest(w.Layer, live[id], running, isTaken, opt) {
				reserve(w, c, -1)
			}
		}
	}
	return next, made, judged
}

// startNow is the start of l's reservation r whose start was unknown, as
// the run times known now tell it (still zero when they do not).
func startNow(r Reservation, l *Layer, running Running, opt ReserveOptions) time.Time {
	h, ok := running.Host(r.Host)
	if !ok {
		return time.Time{}
	}
	if f, ok := freeAt(h, sized(l, opt.Memory), running, opt.Now); ok {
		return f.start
	}
	return time.Time{}
}

// latest is the index in rs of the layer's reservation starting last, an
// unknown start the latest, of those not on a fresh host; -1 when none.
func latest(rs []Reservation, layer string, fresh map[string]bool) int {
	best := -1
	for i := range rs {
		r := &rs[i]
		if r.Layer != layer || fresh[r.Host] {
			continue
		}
		if best < 0 || !rs[best].Start.IsZero() && (r.Start.IsZero() || r.Start.After(rs[best].Start)) {
			best = i
		}
	}
	return best
}

// freeing is a host and when it is expected to have room for a frame.
type freeing struct {
	host  Host
	start time.Time // zero: unknown
	rank  time.Time // the order of hosts of unknown start: the last start they wait for
}

// roomNow is up to n hosts the layer may use, not taken, with room for one
// of its frames now, the tightest first: a walk of the index, which offers
// only hosts with at least that idle.
func roomNow(l *Layer, n int64, hosts Hosts, taken func(string) bool, opt ReserveOptions) []freeing {
	sz := sized(l, opt.Memory)
	var out []freeing
	var found int64
	eachHost(l, taken, opt, func(t string, visit func(Host) bool) {
		found = 0
		hosts.Walk(l.Facility, t, walkMin(sz), nil, visit)
	}, func(h Host) bool {
		if f, ok := freeAt(h, sz, nil, opt.Now); ok && f.start.Equal(opt.Now) {
			out = append(out, f)
			found++
		}
		return found < n
	})
	return sortFreeing(out, n)
}

// soonest is up to n hosts the layer may use, not taken, expected to have
// room for one of its frames soonest: those whose start is known first.
func soonest(l *Layer, n int64, running Running, taken func(string) bool, opt ReserveOptions) []freeing {
	sz := sized(l, opt.Memory)
	var out []freeing
	eachHost(l, taken, opt, func(t string, visit func(Host) bool) {
		running.AllHosts(l.Facility, t, visit)
	}, func(h Host) bool {
		if f, ok := freeAt(h, sz, running, opt.Now); ok {
			out = append(out, f)
		}
		return true
	})
	return sortFreeing(out, n)
}

// eachHost runs walk for each of the layer's tags the options let it use,
// and has visit see each host once, none taken; a tag's walk goes on while
// visit returns true.
func eachHost(l *Layer, taken func(string) bool, opt ReserveOptions, walk func(tag string, visit func(Host) bool),
	visit func(Host) bool) {
	seen := map[string]bool{}
	for _, t := range l.Tags {
		if opt.TagFilter != nil && !opt.TagFilter(l.Facility, t) {
			continue
		}
		walk(t, func(h Host) bool {
			if seen[h.ID] || taken(h.ID) {
				return true
			}
			seen[h.ID] = true
			return visit(h)
		})
	}
}

// sortFreeing puts the hosts in order of their start, and returns the
// first n.
func sortFreeing(out []freeing, n int64) []freeing {
	slices.SortFunc(out, func(a, b freeing) int {
		switch {
		case a.start.IsZero() != b.start.IsZero():
			if a.start.IsZero() {
				return 1
			}
			return -1
		}
		// Ties (hosts with room now) go to the tightest, as best fit.
		return cmp.Or(a.start.Compare(b.start), a.rank.Compare(b.rank), cmp.Compare(a.host.Idle.Cores, b.host.Idle.Cores),
			cmp.Compare(a.host.Idle.Mem, b.host.Idle.Mem), cmp.Compare(a.host.ID, b.host.ID))
	})
	return out[:min(int64(len(out)), n)]
}

// freeAt is when h, emptied of enough of its running frames (those expected
// to end first, then those of unknown run by start), has room for a frame
// of l as sized on the whole host; false when the host could never take
// one, or is a GPU host a layer without GPUs leaves to GPU work. With procs
// nil, only a host with room now is.
func freeAt(h Host, l *Layer, procs Running, now time.Time) (freeing, bool) {
	if !osMatch(l.OS, h.OS) || l.Min.GPUs <= 0 && h.Total.GPUs > 0 {
		return freeing{}, false
	}
	whole := h
	whole.Idle = h.Total
	whole.MemFree = max(h.MemFree, h.Total.Mem)
	if !threadModeAllows(&whole, l) {
		return freeing{}, false
	}
	need, ok := Size(&whole, l, false)
	if !ok || !h.Total.Covers(need) {
		return freeing{}, false
	}
	// Sizing asks idle cores of at least the request, whatever it books
	// (a layer that cannot thread books one core), and a request of 0 or
	// below a host with every core idle.
	if l.Min.Cores <= 0 {
		need.Cores = h.Total.Cores
	} else {
		need.Cores = max(need.Cores, l.Min.Cores)
	}
	f := freeing{host: h, start: now, rank: now}
	idle := h.Idle
	if idle.Covers(need) {
		return f, true
	}
	if procs == nil {
		return freeing{}, false
	}
	ps := procs.Procs(h.ID)
	slices.SortFunc(ps, func(a, b Proc) int {
		ea, eb := a.end(now), b.end(now)
		if ea.IsZero() != eb.IsZero() {
			if ea.IsZero() {
				return 1
			}
			return -1
		}
		return cmp.Or(ea.Compare(eb), a.Started.Compare(b.Started))
	})
	for _, p := range ps {
		idle = idle.Add(p.Size)
		e := p.end(now)
		if e.IsZero() {
			f.start = time.Time{}
			f.rank = p.Started
		} else if !f.start.IsZero() {
			f.start, f.rank = e, e
		}
		if idle.Covers(need) {
			return f, true
		}
	}
	return freeing{}, false
}
