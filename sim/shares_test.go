package sim

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim/workload"
)

// Issue 15's acceptance for fairness, on the multi-show farm at a tenth of
// its size: with every feature of issue 15 on, each show's share error is no
// worse than best fit with the lottery alone gives it (within shareSlack),
// same workload and seed. BENCHMARKS.md has the full size.
func TestShowSharesWithEveryFeature(t *testing.T) {
	t.Parallel()
	// shareSlack is a tenth of a point of the farm's core-hours: one
	// frame's start moved by a round changes a show's share by about that
	// at a tenth of the size.
	const shareSlack = 0.001
	w, err := workload.Load("multi-show")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(w, Options{Seed: 1, Scale: 0.1, JobScale: 0.1}, []Variant{
		{Label: "today", TagPressure: 0.5},
		{Label: "every", TagPressure: 0.5, Locality: true, Memory: match.Memory{Shows: []string{"*"}, Headroom: 0.2},
			Reservations: true, ReservationAfter: 10 * time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("\n%s", buf.String())
	today, every := rep.Variants[0], rep.Variants[1]
	if len(today.ShowShareError) != 3 {
		t.Fatalf("share errors of %d shows, want alpha, beta and gamma: %v", len(today.ShowShareError), today.ShowShareError)
	}
	var sum float64
	for show, e := range today.ShowShareError {
		sum += e
		got, ok := every.ShowShareError[show]
		t.Logf("%s: share error %.4f today, %.4f with every feature", show, e, got)
		if !ok || got > e+shareSlack {
			t.Errorf("show %s: share error %.4f with every feature, today %.4f", show, got, e)
		}
	}
	if mean := sum / 3; math.Abs(mean-today.ShareError) > 0.0002 {
		t.Errorf("share_error %.4f is not the mean of the shows' %.4f", today.ShareError, mean)
	}
}
