package sim

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim/workload"
)

// small is the size each committed scenario runs at in the default suite:
// about 24 hosts (every manual tag of the stress farm's shape on some) and
// 400 frames.
func small(w *workload.Workload, seed uint64) Options {
	hosts, frames := w.Size()
	return Options{Seed: seed, Scale: min(1, 24/float64(hosts)), JobScale: min(1, 400/frames)}
}

var defaultVariant = []Variant{{Label: "default", TagPressure: 0.5}}

// Every committed scenario runs to drain at a small size, booking every
// frame at least once.
func TestScenariosDrain(t *testing.T) {
	all, err := workload.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 4 {
		t.Fatalf("%d committed scenarios, want at least 4", len(all))
	}
	for _, w := range all {
		t.Run(w.Name, func(t *testing.T) {
			t.Parallel()
			rep, err := Run(w, small(w, 1), defaultVariant)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			rep.WriteTable(&buf)
			t.Logf("\n%s", buf.String())
			res := rep.Variants[0]
			if res.DrainS == nil {
				t.Fatalf("did not drain within the limit: %+v", res)
			}
			if res.FramesBooked < int64(rep.Frames) {
				t.Errorf("%d frames booked, want at least the %d frames", res.FramesBooked, rep.Frames)
			}
			if !(res.Utilization > 0 && res.Utilization <= 1) {
				t.Errorf("utilization %v, want in (0, 1]", res.Utilization)
			}
		})
	}
}

var wallKeys = regexp.MustCompile(`"wall_s": [0-9.e+-]+`)

// The same scenario and seed give the same report, byte for byte but for
// the wall keys; another seed gives another.
func TestDeterministic(t *testing.T) {
	t.Parallel()
	w, err := workload.Load("memory-heavy") // frames die of memory, and are retried
	if err != nil {
		t.Fatal(err)
	}
	variants := []Variant{{Label: "best-fit", TagPressure: 0.5},
		{Label: "epvm-strict", Policy: match.NewEPVM(0, 0), Order: match.OrderStrict, TagPressure: 0.5}}
	report := func(seed uint64) string {
		rep, err := Run(w, small(w, seed), variants)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		return wallKeys.ReplaceAllString(buf.String(), `"wall_s": 0`)
	}
	a, b := report(1), report(1)
	if a != b {
		t.Fatalf("two runs of seed 1 differ:\n%s\n---\n%s", a, b)
	}
	if c := report(2); c == a {
		t.Fatalf("seed 2 gave seed 1's report:\n%s", a)
	}
}
