package sim

import (
	"math"
	"testing"

	"github.com/cuesched/cuesched/sim/workload"
)

// smallLocality is locality.sim at half its hosts and jobs and a third of
// its frames: enough waiting layers that the lottery gives most freed hosts
// to another job, cheap enough for the default suite.
const smallLocality = `about locality.sim, small
hosts 50 cores=16 mem=64G alloc=general
sub studio general size=800 burst=800
job shot show=studio count=150 every=30s maxcores=64 priority=50
layer render job=shot frames=8-12 cores=16 mem=8G used=0.5-0.9 runtime=4m setup=1m threadable
`

// Locality (issue 15): best fit with the lottery and locality starts at
// least twice the share of frames on a warm host as without, the same
// workload and seed in the same run, with utilization within 1 point.
func TestLocalityWarmShare(t *testing.T) {
	t.Parallel()
	w, err := workload.Parse("small-locality", []byte(smallLocality))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(w, Options{Seed: 1},
		[]Variant{{Label: "today", TagPressure: 0.5}, {Label: "warm", TagPressure: 0.5, Locality: true}})
	if err != nil {
		t.Fatal(err)
	}
	today, warm := rep.Variants[0], rep.Variants[1]
	t.Logf("warm_share %.3f -> %.3f, utilization %.3f -> %.3f", today.WarmShare, warm.WarmShare,
		today.Utilization, warm.Utilization)
	if !(today.WarmShare > 0 && warm.WarmShare >= 2*today.WarmShare) {
		t.Errorf("warm_share %.3f with locality, %.3f without: want at least twice", warm.WarmShare, today.WarmShare)
	}
	if d := math.Abs(warm.Utilization - today.Utilization); d > 0.01 {
		t.Errorf("utilization %.3f with locality, %.3f without: want within 1 point", warm.Utilization, today.Utilization)
	}
}
