package sim

import (
	"slices"
	"time"
)

// maxSamples bounds a variant's series over time: the sampling interval
// starts at a second and doubles each time 2*maxSamples samples are taken
// (pairs merged), so a run longer than maxSamples seconds ends with
// maxSamples to 2*maxSamples samples whatever its length, for a comparison
// or two per event.
const maxSamples = 200

// sample is the farm over one interval of simulated time, ending at.
type sample struct {
	at time.Duration
	// util is the cores in use over the cores offered, averaged over the
	// interval (its mean over the run, weighted by the intervals' lengths,
	// is the report's utilization).
	util float64
	// waiting are the frames waiting (ready, not started) at at, per width
	// class.
	waiting [nWidths]int64
}

// timeline is what the HTML report draws of a variant's run; the JSON
// holds none of it.
type timeline struct {
	samples []sample
	frames  [nWidths]int       // the farm's frames per width class
	waits   [nWidths][]float64 // each class's waits, sorted, in seconds
	shares  []showShare
}

// showShare is a show's share of the core-hours used against its share of
// the subscriptions' size.
type showShare struct {
	show             string
	used, subscribed float64
}

// sampler cuts the run into intervals as the clock advances.
type sampler struct {
	offered float64 // core units of the farm
	step    time.Duration
	next    time.Duration // the open interval's end
	area    float64       // core-unit-seconds in use within the open interval
	samples []sample
}

func newSampler(offered int64) sampler {
	return sampler{offered: float64(offered), step: time.Second, next: time.Second}
}

// advance integrates [from, to), over which inUse core units ran and
// waiting frames waited, closing the intervals that end within (from, to]:
// a sample at to sees the farm before the events at to.
func (s *sampler) advance(from, to time.Duration, inUse int64, waiting *[nWidths]int64) {
	for s.next <= to {
		s.area += float64(inUse) * (s.next - from).Seconds()
		from = s.next
		s.close(s.next, waiting)
	}
	s.area += float64(inUse) * (to - from).Seconds()
}

// finish closes the last interval, shorter than the others, at the end of
// the run.
func (s *sampler) finish(end time.Duration, waiting *[nWidths]int64) {
	if end > s.last() {
		s.close(end, waiting)
	}
}

func (s *sampler) last() time.Duration {
	if len(s.samples) == 0 {
		return 0
	}
	return s.samples[len(s.samples)-1].at
}

func (s *sampler) close(at time.Duration, waiting *[nWidths]int64) {
	x := sample{at: at, waiting: *waiting}
	if s.offered > 0 {
		x.util = s.area / (s.offered * (at - s.last()).Seconds())
	}
	s.samples = append(s.samples, x)
	s.area = 0
	if len(s.samples) == 2*maxSamples {
		// Every interval so far is s.step long: a pair's mean is the
		// interval twice as long.
		for i := range maxSamples {
			a, b := s.samples[2*i], s.samples[2*i+1]
			b.util = (a.util + b.util) / 2
			s.samples[i] = b
		}
		s.samples = s.samples[:maxSamples]
		s.step *= 2
	}
	s.next = at + s.step
}

// timeline ends the run's series: the last interval, the waits and the
// shows' shares.
func (r *run) timeline() *timeline {
	r.sampler.finish(r.t, &r.m.waiting)
	tl := &timeline{samples: r.sampler.samples}
	tl.shares, _ = r.shares()
	for _, l := range r.layers {
		tl.frames[l.width] += int(l.n)
	}
	for c := range tl.waits {
		tl.waits[c] = r.m.waits[c] // the run is over: nothing adds to them
		slices.Sort(tl.waits[c])
	}
	return tl
}

// shares are the shows' shares of the core-hours used and of the
// subscriptions' size, in the shows' order; ok is false when there is no
// show, no subscribed size or nothing used to share.
func (r *run) shares() (out []showShare, ok bool) {
	out = make([]showShare, len(r.shows))
	var totalSize, totalUsed float64
	for k, s := range r.caps.subs {
		i := slices.Index(r.shows, k.show)
		out[i].subscribed += float64(s.Size)
		totalSize += float64(s.Size)
	}
	for _, u := range r.m.showCoreSec {
		totalUsed += u
	}
	ok = len(r.shows) > 0 && totalSize > 0 && totalUsed > 0
	for i, show := range r.shows {
		out[i].show = show
		if ok {
			out[i].used, out[i].subscribed = r.m.showCoreSec[i]/totalUsed, out[i].subscribed/totalSize
		}
	}
	return out, ok
}
