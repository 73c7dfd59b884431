package sim

import (
	"bytes"
	"os"
	"testing"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim/workload"
)

// policies are today's placement policies and layer orders side by side.
var policies = []Variant{
	{Label: "best-fit/lottery", Settings: []string{"policy=best-fit", "order=lottery"}, TagPressure: 0.5},
	{Label: "best-fit/strict", Settings: []string{"policy=best-fit", "order=strict"}, Order: match.OrderStrict,
		TagPressure: 0.5},
	{Label: "epvm/lottery", Settings: []string{"policy=epvm", "order=lottery"}, Policy: match.NewEPVM(0, 0),
		TagPressure: 0.5},
	{Label: "epvm/strict", Settings: []string{"policy=epvm", "order=strict"}, Policy: match.NewEPVM(0, 0),
		Order: match.OrderStrict, TagPressure: 0.5},
}

// BENCHMARKS.md's simulator figures: every committed scenario at full
// size under today's policies side by side (CUESCHED_BENCH=1;
// CUESCHED_SIM=NAME runs one scenario).
func TestBenchScenarios(t *testing.T) {
	if os.Getenv("CUESCHED_BENCH") != "1" {
		t.Skip("CUESCHED_BENCH=1 runs every scenario at full size")
	}
	all, err := workload.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		if only := os.Getenv("CUESCHED_SIM"); only != "" && only != w.Name {
			continue
		}
		rep, err := Run(w, Options{Seed: 1}, policies)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteTable(&buf); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", buf.String())
	}
}
