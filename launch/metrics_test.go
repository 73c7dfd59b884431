package launch

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLaunchOutcomesExportedFromStart: every outcome has a series before any
// launch, so a failure rate can be computed at once.
func TestLaunchOutcomesExportedFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "cuesched_dispatch_launches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				got[l.GetValue()] = true
			}
		}
	}
	for _, o := range []string{"launched", "already_running", "refused", "ambiguous"} {
		if !got[o] {
			t.Errorf("no cuesched_dispatch_launches_total{outcome=%q} before any launch (have %v)", o, got)
		}
	}
}
