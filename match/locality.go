package match

import "time"

// Locality (Options.Locality): among hosts that fit a frame equally well, a
// host that recently ran a frame of the same layer (warm caches, the layer's
// files already local) comes first, then one that ran a frame of the same
// job. Warmth only breaks ties: it never overrides a better fit, a cap, tag
// pressure or the keeping of GPU hosts for GPU work.

// WarmWindow is how long after a frame of a layer last ran on a host (was
// booked or released there) the host counts as warm for the layer and its
// job. Half an hour: long enough for the next frames of a layer of short
// frames to find the host, short enough that the cache a frame filled is
// likely still there on a host that has run other work since.
const WarmWindow = 30 * time.Minute

// Ran is a frame of a layer that ran on a host, as the host index remembers
// it (Host.Ran).
type Ran struct {
	Layer, Job string
	// At is when a frame of the layer was last booked or released on the
	// host.
	At time.Time
	// Running is how many of its frames run there now.
	Running int32
}

// Warmth is how warm a host is for a layer.
type Warmth int8

const (
	Cold      Warmth = iota
	WarmJob          // ran a frame of the layer's job within WarmWindow
	WarmLayer        // ran a frame of the layer itself within WarmWindow
)

// WarmthOf is how warm h is for the layer of job at now, and the memory
// that makes it so.
func WarmthOf(h *Host, layerID, jobID string, now time.Time) (Warmth, Ran) {
	w, why := Cold, Ran{}
	for _, r := range h.Ran {
		// Without a clock (Options.Now zero) only a running frame warms.
		if r.Running <= 0 && (now.IsZero() || now.Sub(r.At) > WarmWindow) {
			continue
		}
		switch {
		case r.Layer == layerID:
			return WarmLayer, r
		case w == Cold && jobID != "" && r.Job == jobID:
			w, why = WarmJob, r
		}
	}
	return w, why
}

// WarmWalker is what a Hosts offers for locality (package cache implements
// it; without it Options.Locality changes nothing).
type WarmWalker interface {
	// WalkWarm visits, of the hosts with exactly cores idle that Walk
	// (uncontested false) or WalkUncontested's first walk (true: without the
	// hosts carrying a contested tag other than tag) would visit for the same
	// facility, tag and min, those that recently ran a frame of the layer,
	// then those that ran one of the job: a few of each, the most recent
	// first, until visit returns false.
	WalkWarm(facility, tag string, min Resources, cores int64, layerID, jobID string, uncontested bool,
		visit func(Host) bool)
}

// warmMisses is how many of a layer's placements in a round may find no
// warm host as good as the best before the layer stops asking for the rest
// of the round: within a round hosts only fill, so warm hosts that tied
// none of its first placements seldom tie a later one, and a round placing
// thousands of frames would pay for every ask (BENCHMARKS.md, "Locality").
const warmMisses = 2

// warmSearch offers the layer's warm hosts once the walks found p.best:
// one that fits as well (the same idle cores, best fit's measure, and the
// same cost) and is warmer takes its place.
func (p *planner) warmSearch(ls *layerState) {
	p.warmWon = false
	if p.warmer == nil || !p.found || ls.warmMiss >= warmMisses {
		return
	}
	defer func() {
		if !p.warmWon {
			ls.warmMiss++
		}
	}()
	b := p.best
	p.bestWarmKnown = false // worked out when a warm host ties (visitWarm)
	for _, t := range ls.tags {
		p.warmer.WalkWarm(ls.l.Facility, t, ls.min, b.host.Idle.Cores, ls.l.ID, ls.l.JobID, !p.plain, p.warmFn)
	}
}

// visitWarm offers one warm host: the checks of visit, then the tie.
func (p *planner) visitWarm(h Host) bool {
	ls := p.cur
	l := ls.sz // as visit sizes it: memory from history may have trimmed it
	c := p.spare
	c.host = h
	hp := &c.host
	if !hostMinimums(hp) || !osMatch(l.OS, hp.OS) || !threadModeAllows(hp, l) {
		return true
	}
	if ls.noGPU && hp.Total.GPUs > 0 && !ls.shape.plainNone {
		return true // GPU hosts stay kept for GPU work, warm or not
	}
	var ok bool
	if c.size, ok = Size(hp, l, ls.self); !ok || !fitsIdle(hp, c.size) || !p.capsOn(ls, hp, c.size) ||
		p.resv != nil && !p.reservedOK(ls, c) {
		return true
	}
	c.cost = p.policy.Cost(hp, c.size)
	b := p.best
	if c.cost != b.cost || hp.Idle.Cores != b.host.Idle.Cores || hp.ID == b.host.ID {
		return true // not as good a fit, or the best itself
	}
	if b == p.best && !p.bestWarmKnown {
		b.warm, b.ran = WarmthOf(&b.host, l.ID, l.JobID, p.opt.Now)
		p.bestWarmKnown = true
	}
	c.warm, c.ran = WarmthOf(hp, l.ID, l.JobID, p.opt.Now)
	if c.warm > b.warm || c.warm == b.warm && c.warm != Cold && better(c, b) {
		p.best, p.spare = c, b
		p.warmWon = true
	}
	return p.best.warm != WarmLayer
}
