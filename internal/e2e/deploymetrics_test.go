package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	defer resp.Body.Close()
	exported := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		exported[line[:strings.IndexAny(line, "{ ")]] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	for name, where := range used {
		if !exported[name] {
			t.Errorf("%s is read by %s but %s does not export it", name, strings.Join(where, "; "), addr)
		}
	}
}
