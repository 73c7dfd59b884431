package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/config"
)

// metricsPort is the port of the default --metrics-addr: the Dockerfile, the
// manifests and the probes must use it.
func metricsPort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(config.Default().MetricsAddr)
	if err != nil {
		t.Fatalf("config.Default().MetricsAddr %q: %v", config.Default().MetricsAddr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("config.Default().MetricsAddr %q: port %q: %v", config.Default().MetricsAddr, p, err)
	}
	return n
}

// dockerfile is the Dockerfile's instructions, continuation lines joined and
// comments dropped, each as [instruction, rest].
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		instr, rest, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(instr), strings.TrimSpace(rest)})
		cur.Reset()
	}
	return out
}

// TestDockerfileBuildStepMakesAStaticBinary runs the Dockerfile's build step,
// as written, into a temporary directory (images cannot be pulled here): the
// binary is static (no interpreter, no shared library) and runs. The runtime
// stage is checked too: a small base, a non-root user, the default metrics
// port exposed, `cuesched run` as the entry point.
func TestDockerfileBuildStepMakesAStaticBinary(t *testing.T) {
	t.Parallel()
	instrs := dockerfile(t)
	var build []string
	lastFrom := -1
	for i, in := range instrs {
		if in[0] == "FROM" {
			lastFrom = i
		}
		if in[0] == "RUN" && strings.Contains(in[1], "go build") {
			build = strings.Fields(in[1])
		}
	}
	if build == nil {
		t.Fatal("Dockerfile: no RUN ... go build step")
	}
	var env []string
	for len(build) > 0 && strings.Contains(build[0], "=") {
		env, build = append(env, build[0]), build[1:]
	}
	if !slices.Contains(env, "CGO_ENABLED=0") || len(build) < 2 || build[0] != "go" || build[1] != "build" {
		t.Fatalf("Dockerfile build step %q: want CGO_ENABLED=0 go build ...", strings.Join(append(env, build...), " "))
	}
	out := filepath.Join(t.TempDir(), "cuesched")
	args := slices.Clone(build[1:])
	o := slices.Index(args, "-o")
	if o < 0 || o+1 >= len(args) {
		t.Fatalf("Dockerfile build step has no -o OUTPUT: %v", build)
	}
	args[o+1] = out
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = ".." // the build context is the repository's root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(append(env, build...), " "), err, b)
	}
	checkStatic(t, out)
	v, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "cuesched ") {
		t.Fatalf("%s version: %v, printed %q", out, err, v)
	}
	checkRuntimeStage(t, instrs[lastFrom:])
}

func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): not static", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (DT_NEEDED): not static", path, libs)
	}
}

func checkRuntimeStage(t *testing.T, stage [][2]string) {
	t.Helper()
	var user, expose, entry string
	for _, in := range stage {
		switch in[0] {
		case "FROM":
			if !strings.Contains(in[1], "distroless/static") && in[1] != "scratch" {
				t.Errorf("runtime stage FROM %s: want distroless static or scratch", in[1])
			}
		case "USER":
			user = in[1]
		case "EXPOSE":
			expose = in[1]
		case "ENTRYPOINT":
			entry = in[1]
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("runtime stage USER %q: want a non-root user", user)
	}
	if want := strconv.Itoa(metricsPort(t)); strings.TrimSuffix(expose, "/tcp") != want {
		t.Errorf("EXPOSE %q: want the default metrics port %s (config.Default)", expose, want)
	}
	var argv []string
	if err := json.Unmarshal([]byte(entry), &argv); err != nil || len(argv) != 2 ||
		filepath.Base(argv[0]) != "cuesched" || argv[1] != "run" {
		t.Errorf(`ENTRYPOINT %s: want ["/path/to/cuesched", "run"] (exec form)`, entry)
	}
}

// unit is a systemd unit's settings: section -> key -> values in order.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not KEY=VALUE in a section", path, i+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// TestSystemdUnit: the unit has the usual hardening, restarts on failure,
// stops with SIGTERM and waits longer than the lease, reads its settings
// from an EnvironmentFile; where systemd-analyze exists, it verifies the
// unit too (with ExecStart pointed at an existing executable).
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	svc := readUnit(t, "cuesched.service")["Service"]
	want := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "SystemCallFilter": "@system-service",
		"Restart": "on-failure", "KillSignal": "SIGTERM",
	}
	for k, v := range want {
		if !slices.Contains(svc[k], v) {
			t.Errorf("cuesched.service [Service] %s=%v: want %s=%s", k, svc[k], k, v)
		}
	}
	if !slices.Contains(svc["DynamicUser"], "yes") && (len(svc["User"]) == 0 || svc["User"][0] == "root") {
		t.Errorf("cuesched.service runs as root: want DynamicUser=yes or a dedicated User=")
	}
	if len(svc["EnvironmentFile"]) == 0 {
		t.Errorf("cuesched.service has no EnvironmentFile= for its CUESCHED_* settings")
	}
	if len(svc["ExecStart"]) != 1 || !strings.HasSuffix(svc["ExecStart"][0], "cuesched run") {
		t.Errorf("cuesched.service ExecStart=%v: want .../cuesched run", svc["ExecStart"])
	}
	if len(svc["TimeoutStopSec"]) != 1 {
		t.Fatalf("cuesched.service TimeoutStopSec=%v: want one", svc["TimeoutStopSec"])
	}
	stop, err := time.ParseDuration(svc["TimeoutStopSec"][0] + "s")
	if err != nil || stop <= config.Default().Lease {
		t.Errorf("cuesched.service TimeoutStopSec=%s: want seconds above the lease (%s)", svc["TimeoutStopSec"][0],
			config.Default().Lease)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit was only parsed")
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("cuesched.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants ExecStart's binary to exist: this test's own will do.
	unit := filepath.Join(t.TempDir(), "cuesched.service")
	fixed := strings.Replace(string(data), "ExecStart="+strings.TrimSuffix(svc["ExecStart"][0], " run"),
		"ExecStart="+self, 1)
	if err := os.WriteFile(unit, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "cuesched.service") {
			ours = append(ours, l)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify cuesched.service: %v\n%s", err, out)
	}
}

// promtool is Debian's promtool (package prometheus); without it the test
// skips, but not under CI, whose setup installs it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	msg := "promtool is missing: install Debian's prometheus package (scripts/ensure-postgres.sh does, as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestAlertRules: the rules pass `promtool check rules`, and their unit tests
// (alerts_test.yaml: some alerts fire, others do not) pass.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		if out, err := exec.Command(pt, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestMetricNamesOf(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`sum by (show) (rate(scheduler_frames_dispatched_total[$__rate_interval]))`:   {"scheduler_frames_dispatched_total"},
		`histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x"}[5m])))`: {"a_seconds_bucket"},
		`rate(p_total[1m]) * on (instance, job) group_left (version) b_info`:          {"b_info", "p_total"},
		`label_replace(up_a == 0, "feed", "listener", "", "") or up_b == 0`:           {"up_a", "up_b"},
		`max(c) - sum (d) > 0 and e unless bool f offset 5m`:                          {"c", "d", "e", "f"},
		`absent(cuesched_build_info)`:                                                 {"cuesched_build_info"},
		`sum without (x) (g{a="b}", c=~'d{'}) / 1e3`:                                  {"g"},
	} {
		if got := metricNamesOf(expr); !slices.Equal(got, want) {
			t.Errorf("metricNamesOf(%s) = %v, want %v", expr, got, want)
		}
	}
}

// TestExpressionsReadSomething: the dashboard and the rules have every
// panel and rule read at least one metric (an expression the name parser
// cannot read would otherwise pass the scrape check unchecked).
func TestExpressionsReadSomething(t *testing.T) {
	t.Parallel()
	exprs, err := Expressions()
	if err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 10 {
		t.Fatalf("%d expressions in the dashboard and the rules, want the panels' and the rules'", len(exprs))
	}
	for where, e := range exprs {
		if len(metricNamesOf(e)) == 0 {
			t.Errorf("%s: %q reads no metric the parser can see", where, e)
		}
	}
}

// TestDashboard: the dashboard imports with a Prometheus data source chosen
// at import (the DS_PROMETHEUS input), which every panel and target uses, and
// has the panels an operator looks at first.
func TestDashboard(t *testing.T) {
	t.Parallel()
	type ds struct{ Type, UID string }
	var d struct {
		SchemaVersion int
		Inputs        []struct{ Name, Type, PluginID string } `json:"__inputs"`
		Panels        []struct {
			Title      string
			Datasource ds
			Targets    []struct {
				Datasource ds
				Expr       string
			}
		}
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current Grafana's (39)", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v: want one Prometheus data source input DS_PROMETHEUS", d.Inputs)
	}
	want := ds{"prometheus", "${DS_PROMETHEUS}"}
	titles := map[string]string{}
	for _, p := range d.Panels {
		if p.Datasource != want {
			t.Errorf("panel %q data source %+v, want %+v", p.Title, p.Datasource, want)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != want {
				t.Errorf("panel %q target data source %+v, want %+v", p.Title, tg.Datasource, want)
			}
			titles[p.Title] += tg.Expr + "\n"
		}
	}
	for title, metric := range map[string]string{
		"Booking rate": "scheduler_frames_dispatched_total", "Time to book": "scheduler_time_to_book_seconds_bucket",
		"Layers waiting, by reason": "cuesched_layers_waiting", "Clusters by owner": "cuesched_clusters_owned",
		"Replication lag": "cuesched_replication_lag_seconds", "Launch failures": "cuesched_dispatch_launches_total",
		"Launch outbox backlog": "cuesched_dispatch_outbox_pending", "Process CPU": "process_cpu_seconds_total",
		"Counter rows the guard refuses": "cuesched_counters_refused", "Invariant audit findings": "cuesched_audit_findings",
		"Rows skipped, by reason": "cuesched_rows_skipped_total",
	} {
		if !strings.Contains(titles[title], metric) {
			t.Errorf("no panel %q reading %s", title, metric)
		}
	}
}
