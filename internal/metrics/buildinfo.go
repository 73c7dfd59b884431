package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterBuildInfo registers cuesched_build_info, always 1, whose labels say
// which build runs: dashboards join it to tell replicas apart during a
// rolling upgrade, and its absence means no instance is scraped. version is
// the binary's version string ("" when the caller has none).
func RegisterBuildInfo(reg prometheus.Registerer, version string) {
	if version == "" {
		version = "unknown"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cuesched_build_info",
		Help: "Always 1; its labels name the running build's version, Go version and VCS revision.",
		ConstLabels: prometheus.Labels{
			"version": version, "goversion": runtime.Version(), "revision": revision(),
		},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// revision is the VCS revision the Go toolchain stamped, "" without one
// (a build outside a checkout, or with -buildvcs=false).
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}
