package scheduler

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/match"
)

// TestEveryWaitReasonExportedFromStart: cuesched_layers_waiting has a series
// per reason, at 0, before any round.
func TestEveryWaitReasonExportedFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(Config{Loop: metrics.NewLoop(reg)}, Deps{})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() == "cuesched_layers_waiting" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = true
			}
		}
	}
	for _, r := range match.Reasons {
		if !got[string(r)] {
			t.Errorf("no cuesched_layers_waiting{reason=%q} before any round (have %v)", r, got)
		}
	}
}
