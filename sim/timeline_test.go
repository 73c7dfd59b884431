package sim

import (
	"math"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim/workload"
)

// runVariant runs one variant of a workload and keeps the run, whose frames
// the tests recount.
func runVariant(t *testing.T, w *workload.Workload, opt Options, v Variant) (*run, Result) {
	t.Helper()
	farm, err := w.Draw(opt.Seed, opt.Scale, opt.JobScale)
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(farm, v)
	r.simulate(30 * 24 * time.Hour)
	return r, r.result(v)
}

// One one-core host and three ten-minute one-core frames ready at once:
// the farm is full for 30 minutes, and two frames wait, then one, then
// none.
func TestTimelineByHand(t *testing.T) {
	t.Parallel()
	w, err := workload.Parse("hand.sim", []byte(`hosts 1 cores=1 mem=4G
sub s general size=1
job j show=s
layer l job=j frames=3 cores=1 mem=1G runtime=10m
`))
	if err != nil {
		t.Fatal(err)
	}
	_, res := runVariant(t, w, Options{Seed: 1}, Variant{Label: "default"})
	tl := res.timeline
	if res.SimS != 1800 {
		t.Fatalf("the run took %v s, want 1800 (three 10-minute frames one after another)", res.SimS)
	}
	if n := len(tl.samples); n < maxSamples || n >= 2*maxSamples {
		t.Errorf("%d samples, want %d to %d", n, maxSamples, 2*maxSamples-1)
	}
	if tl.frames != [nWidths]int{3, 0, 0, 0} {
		t.Errorf("frames per width class %v, want 3 of le1", tl.frames)
	}
	prev := time.Duration(0)
	for _, s := range tl.samples {
		if s.at <= prev {
			t.Fatalf("sample at %v after one at %v", s.at, prev)
		}
		prev = s.at
		if math.Abs(s.util-1) > 1e-9 {
			t.Errorf("utilization %v over the interval ending %v, want 1", s.util, s.at)
		}
		want := int64(0) // a sample sees the farm before the frame ending at its time
		switch {
		case s.at <= 10*time.Minute:
			want = 2
		case s.at <= 20*time.Minute:
			want = 1
		}
		if s.waiting != [nWidths]int64{want} {
			t.Errorf("at %v waiting %v, want %d of le1", s.at, s.waiting, want)
		}
	}
	if prev != 30*time.Minute {
		t.Errorf("the last sample is at %v, want the end of the run (30m)", prev)
	}
	if got := tl.waits[widthLE1]; len(got) != 3 || got[0] != 0 || got[1] != 600 || got[2] != 1200 {
		t.Errorf("le1 waits %v, want [0 600 1200]", got)
	}
	if len(tl.shares) != 1 || tl.shares[0] != (showShare{show: "s", used: 1, subscribed: 1}) {
		t.Errorf("shares %+v, want show s using all and subscribed all", tl.shares)
	}
}

// On committed farms under two variants: utilization is within 0-1 at every
// sample and its mean over the run is the report's; the frames waiting at
// every sample are those ready before it and first started at or after it,
// recounted from the frames; the run's end is the last sample.
func TestTimelineAddsUp(t *testing.T) {
	t.Parallel()
	variants := []Variant{{Label: "best-fit", TagPressure: 0.5},
		{Label: "epvm-strict", Policy: match.NewEPVM(0, 0), Order: match.OrderStrict, TagPressure: 0.5}}
	for _, name := range []string{"strandgrow", "memory-heavy"} {
		w, err := workload.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range variants {
			t.Run(name+"/"+v.Label, func(t *testing.T) {
				t.Parallel()
				r, res := runVariant(t, w, small(w, 1), v)
				if name == "strandgrow" && r.m.oomKills > 0 {
					t.Fatalf("%d frames died of memory: the waiting counts are recounted on a farm where none does", r.m.oomKills)
				}
				checkTimeline(t, r, res)
			})
		}
	}
}

func checkTimeline(t *testing.T, r *run, res Result) {
	t.Helper()
	tl := res.timeline
	if n := len(tl.samples); res.SimS >= 2*maxSamples && (n < maxSamples || n >= 2*maxSamples) {
		t.Errorf("%d samples of a %v s run, want %d to %d", n, res.SimS, maxSamples, 2*maxSamples-1)
	}
	if last := tl.samples[len(tl.samples)-1].at; last.Seconds() != res.SimS {
		t.Errorf("the last sample is at %v, the run ends at %v s", last, res.SimS)
	}
	var area float64
	prev, waited := time.Duration(0), false
	for _, s := range tl.samples {
		if s.util < 0 || s.util > 1+1e-9 {
			t.Errorf("utilization %v over the interval ending %v, want within 0-1", s.util, s.at)
		}
		area += s.util * (s.at - prev).Seconds()
		prev = s.at
		waited = waited || s.waiting != [nWidths]int64{}
		if r.m.oomKills > 0 {
			continue // a killed frame waits again: the recount below knows first starts only
		}
		var want [nWidths]int64
		for _, f := range r.frames {
			if f.started && f.readyAt < s.at && s.at <= f.startAt {
				want[r.layers[f.layer].width]++
			}
		}
		if s.waiting != want {
			t.Fatalf("at %v waiting %v, recounted from the frames %v", s.at, s.waiting, want)
		}
	}
	for c, n := range tl.frames {
		if got := len(tl.waits[c]); got != n {
			t.Errorf("class %s: %d waits of %d frames (the farm drained: each started)", WidthClasses[c], got, n)
		}
	}
	if mean := area / res.SimS; math.Abs(mean-res.Utilization) > 1e-4 {
		t.Errorf("utilization over time averages %v, the report says %v", mean, res.Utilization)
	}
	if !waited {
		t.Error("no frame waits at any sample: the farm checks nothing of the waiting counts")
	}
}
