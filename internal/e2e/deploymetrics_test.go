package e2e

import (
	"strings"
	"testing"

	"github.com/cuesched/cuesched/deploy"
)

// checkDeployMetrics reads a running instance's /metrics and fails for every
// metric name the Grafana dashboard or the alert rules of deploy/ read that
// the instance does not export.
func checkDeployMetrics(t *testing.T, addr string) {
	t.Helper()
	used, err := deploy.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, line := range scrape(t, addr) {
		exported[line[:strings.IndexAny(line, "{ ")]] = true
	}
	for name, where := range used {
		if !exported[name] {
			t.Errorf("%s is read by %s but %s does not export it", name, strings.Join(where, "; "), addr)
		}
	}
}
