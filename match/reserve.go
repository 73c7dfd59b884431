package match

import (
	"cmp"
	"fmt"
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
func ExpectedRun(l *Layer) (d time.Duration, from string, ok bool) {
	switch {
	case l.Runs.Layer > 0:
		return l.Runs.Layer, "layer", true
	case l.Runs.Job > 0:
		return l.Runs.Job, "job", true
	case l.Runs.Service > 0:
		return l.Runs.Service, "service", true
	}
	return 0, "", false
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

// Backfill reports whether a frame of l may run on a host r holds at now:
// only when its expected run ends before r's start. why says which way and
// why, for explain.
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

// reservedOK checks a candidate host against the round's reservations; it
// records in c.use what placing there would be, and the first refusal for
// the layer's wait detail.
func (p *planner) reservedOK(ls *layerState, c *candidate) bool {
	c.use = UseNone
	if p.resv == nil {
		return true
	}
	r, held := p.resv[c.host.ID]
	switch {
	case !held:
		return true
	case r.Layer == ls.l.ID:
		c.use = UseHonoured
		return true
	}
	ok, why := Backfill(ls.l, r, p.opt.Now)
	if ok {
		c.use = UseBackfill
		return true
	}
	if !p.resvRefused {
		p.resvRefused, p.resvWhy = true, why
	}
	return false
}

// indexReservations makes the round's host -> reservation map (nil: none).
func indexReservations(rs []Reservation) map[string]*Reservation {
	if len(rs) == 0 {
		return nil
	}
	m := make(map[string]*Reservation, len(rs))
	for i := range rs {
		m[rs[i].Host] = &rs[i]
	}
	return m
}

// Proc is a frame running on a host, as reservations judge when it ends.
type Proc struct {
	Size    Resources
	Started time.Time
	Run     time.Duration // expected run (ExpectedRun of its layer); 0 unknown
}

// ProcLister lists the frames running on a host (the simulator, and the
// host cache over the replica's procs).
type ProcLister interface {
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
	// Elsewhere are reservations of other clusters: their hosts are not
	// reserved again.
	Elsewhere []Reservation
}

const (
	// MaxReserving is how many layers hold reservations at once by
	// default: a few, so reserved hosts held idle stay a small share of a
	// farm and a round's host walks for them stay few.
	MaxReserving = 8
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

// Reserve plans one cluster's reservations after a round: it keeps those of
// prev whose layer still has waiting frames (live: the layers of the round
// and how many frames each still waits with), at most one host per such
// frame, until their start plus the margin passes, drops those honoured
// (booked: the round's placements on their hosts by their layer), and
// gives the layers of waiting that have waited past their Threshold,
// highest priority first, the hosts expected to free enough soonest, while
// fewer than Max layers hold any. made is the reservations new this time.
func Reserve(prev []Reservation, live map[string]int64, waiting []Waiting, booked []Placement, hosts Hosts,
	procs ProcLister, opt ReserveOptions) (next, made []Reservation) {
	if opt.Max <= 0 {
		opt.Max = MaxReserving
	}
	if opt.Margin <= 0 {
		opt.Margin = ReserveMargin
	}
	honoured := map[string]bool{}
	for _, pl := range booked {
		if pl.Use == UseHonoured {
			honoured[pl.Host.ID] = true
		}
	}
	held := map[string]int64{} // hosts kept per layer
	taken := map[string]bool{}
	for _, r := range opt.Elsewhere {
		taken[r.Host] = true
	}
	for _, r := range prev {
		ref := r.Start
		if ref.IsZero() {
			ref = r.Made
		}
		if honoured[r.Host] || held[r.Layer] >= live[r.Layer] || opt.Now.After(ref.Add(opt.Margin)) {
			continue
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
	due := slices.Clone(waiting)
	due = slices.DeleteFunc(due, func(w Waiting) bool {
		return held[w.Layer.ID] > 0 || opt.Now.Sub(w.Since) < Threshold(w.Layer, mean, opt.After)
	})
	slices.SortFunc(due, func(a, b Waiting) int {
		return cmp.Or(cmp.Compare(b.Layer.Priority, a.Layer.Priority), a.Since.Compare(b.Since),
			cmp.Compare(a.Layer.ID, b.Layer.ID))
	})
	for _, w := range due {
		if len(held) >= opt.Max {
			break
		}
		n := live[w.Layer.ID]
		if n <= 0 {
			continue
		}
		for _, c := range soonest(w.Layer, n, hosts, procs, taken, opt) {
			r := Reservation{Layer: w.Layer.ID, LayerName: w.Layer.Name, Host: c.host.ID, HostName: c.host.Name,
				Start: c.start, Made: opt.Now}
			taken[r.Host] = true
			held[r.Layer]++
			next, made = append(next, r), append(made, r)
		}
	}
	return next, made
}

// freeing is a host and when it is expected to have room for a frame.
type freeing struct {
	host  Host
	start time.Time // zero: unknown
	rank  time.Time // the order of hosts of unknown start: the last start they wait for
}

// soonest is up to n hosts the layer may use, not taken, expected to have
// room for one of its frames soonest: those whose start is known first.
func soonest(l *Layer, n int64, hosts Hosts, procs ProcLister, taken map[string]bool, opt ReserveOptions) []freeing {
	sz := sized(l, opt.Memory)
	var out []freeing
	seen := map[string]bool{}
	for _, t := range l.Tags {
		if opt.TagFilter != nil && !opt.TagFilter(l.Facility, t) {
			continue
		}
		hosts.Walk(l.Facility, t, Resources{}, func(h Host) bool {
			if seen[h.ID] || taken[h.ID] {
				return true
			}
			seen[h.ID] = true
			if f, ok := freeAt(h, sz, procs, opt.Now); ok {
				out = append(out, f)
			}
			return true
		})
	}
	slices.SortFunc(out, func(a, b freeing) int {
		switch {
		case a.start.IsZero() != b.start.IsZero():
			if a.start.IsZero() {
				return 1
			}
			return -1
		}
		return cmp.Or(a.start.Compare(b.start), a.rank.Compare(b.rank), cmp.Compare(a.host.ID, b.host.ID))
	})
	return out[:min(int64(len(out)), n)]
}

// freeAt is when h, emptied of enough of its running frames (those expected
// to end first, then those of unknown run by start), has room for a frame
// of l as sized on the whole host; false when the host could never take
// one, or is a GPU host a layer without GPUs leaves to GPU work.
func freeAt(h Host, l *Layer, procs ProcLister, now time.Time) (freeing, bool) {
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
	ps := procs.Procs(h.ID)
	end := func(p Proc) time.Time {
		if p.Run <= 0 {
			return time.Time{}
		}
		return later(now, p.Started.Add(p.Run))
	}
	slices.SortFunc(ps, func(a, b Proc) int {
		ea, eb := end(a), end(b)
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
		e := end(p)
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

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
