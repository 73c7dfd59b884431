package metrics

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBuildInfo(t *testing.T) {
	for _, tc := range []struct{ given, want string }{{"v1.2.3-4-gabc-dirty", "v1.2.3-4-gabc-dirty"}, {"", "unknown"}} {
		reg := prometheus.NewRegistry()
		RegisterBuildInfo(reg, tc.given)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if len(mfs) != 1 || mfs[0].GetName() != "cuesched_build_info" || len(mfs[0].GetMetric()) != 1 {
			t.Fatalf("version %q: gathered %v, want one cuesched_build_info series", tc.given, mfs)
		}
		m := mfs[0].GetMetric()[0]
		if m.GetGauge().GetValue() != 1 {
			t.Errorf("version %q: value %v, want 1", tc.given, m.GetGauge().GetValue())
		}
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != tc.want || labels["goversion"] != runtime.Version() {
			t.Errorf("version %q: labels %v, want version %q and goversion %q", tc.given, labels, tc.want, runtime.Version())
		}
		if _, ok := labels["revision"]; !ok {
			t.Errorf("version %q: no revision label in %v", tc.given, labels)
		}
	}
}
