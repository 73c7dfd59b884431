package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fuzzCommands are the commands FuzzLoad reads settings for.
var fuzzCommands = []string{"run", "migrate up", "status", "explain", "show list"}

// FuzzLoad reads arbitrary flags (one a line), environment (NAME=value
// lines) and YAML file: Load never panics, refuses with a config error (the
// command exits 2 on it) naming the setting when there is one to name, and
// whatever it accepts is a configuration the instance can run with.
//
// The inputs it found wrongly accepted are in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	for _, s := range []struct {
		cmd       uint8
		args, env string
		file      string
	}{
		{0, "--rqd-port=9002\n--alloc_tags\nshow1:general, show2:gpu", "CUESCHED_FEED=events", "rqd-port: 9000\nfeed: poll\nmanual_tags: [a, b]\nlease: 9s\n"},
		{0, "--batch-min\n10\n--batch-max\n5", "", ""},
		{0, "", "", "instance: ~\n"},
		{0, "", "", "facility: null\n"},
		{0, "", "", "lease: [1, [2]]\n"},
		{0, "", "", "- a\n- b\n"},
		{0, "", "", "a: &x 1\nlease: *x\n"},
		{0, "", "", "rqd_prot: 1\n"},
		{0, "--dry-run=maybe", "", ""},
		{0, "--rqd-tls-cert\nc.pem", "", ""},
		{1, "--db\nhost=h dbname=d", "", "rqd-port: 1\nlease: 1s\n"},
		{2, "stray", "", ""},
		{3, "--policy=epvm\n--order\nstrict", "", "selfish-services: [maya, nuke]\n"},
		{4, "--lease=5s", "", ""},
		{0, "-h", "", ""},
	} {
		f.Add(s.cmd, s.args, s.env, []byte(s.file))
	}
	file := filepath.Join(f.TempDir(), "cuesched.yaml")
	f.Fuzz(func(t *testing.T, cmdN uint8, args, envText string, yaml []byte) {
		cmd := fuzzCommands[int(cmdN)%len(fuzzCommands)]
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		env := map[string]string{}
		for _, line := range strings.Split(envText, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		if len(yaml) > 0 {
			if err := os.WriteFile(file, yaml, 0o600); err != nil {
				t.Fatal(err)
			}
			env[EnvName("config")] = file
		}
		c, err := Load(cmd, argv, func(k string) string { return env[k] }, nil, io.Discard)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if why := runnable(c); why != "" {
			t.Fatalf("%s accepted %q with env %q and file %q: %s", cmd, argv, envText, yaml, why)
		}
	})
}

// checkRefusal: a refusal is a config error (exit 2) that names a setting
// the table has, or says what else is wrong.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("not a config error (exit 1, not 2): %v", err)
	}
	if ce.Setting != "" {
		if !slices.ContainsFunc(settings(&Config{}), func(s setting) bool { return s.name == ce.Setting }) {
			t.Fatalf("names no setting: %v", err)
		}
		if !strings.HasPrefix(err.Error(), "config: --"+ce.Setting+": ") {
			t.Fatalf("does not start with the setting: %v", err)
		}
	}
	if msg := strings.TrimSpace(ce.Err.Error()); msg == "" {
		t.Fatalf("says nothing: %q", err)
	}
}

// runnable says what is wrong with a configuration Load accepted, "" when
// nothing is: the ranges the settings' table promises, and values the
// instance would fail on only after it has connected.
func runnable(c Config) string {
	durations := []struct {
		name   string
		d, min time.Duration
	}{
		{"rqd-timeout", c.RQDTimeout, time.Millisecond}, {"report-grace", c.ReportGrace, time.Millisecond},
		{"poll-interval", c.PollEvery, 100 * time.Millisecond},
		{"log-summary-interval", c.LogSummaryEvery, time.Second}, {"host-ping-max-age", c.HostPingMaxAge, time.Second},
		{"lease", c.Lease, time.Second},
	}
	for _, d := range durations {
		if d.d < d.min {
			return fmt.Sprintf("%s %s is under %s", d.name, d.d, d.min)
		}
	}
	ints := []struct {
		name      string
		n, lo, hi int
	}{
		{"rqd-port", c.RQDPort, 1, 65535}, {"batch-min", c.BatchMin, 1, 10000}, {"batch-max", c.BatchMax, 1, 10000},
		{"launch-workers", c.LaunchWorkers, 1, 10000}, {"workers", c.Workers, 1, 1024},
	}
	for _, n := range ints {
		if n.n < n.lo || n.n > n.hi {
			return fmt.Sprintf("%s %d is outside %d to %d", n.name, n.n, n.lo, n.hi)
		}
	}
	if c.BatchMin > c.BatchMax {
		return "batch-min above batch-max"
	}
	if math.IsNaN(c.TagPressure) || c.TagPressure < 0 || c.TagPressure > 10 {
		return fmt.Sprintf("tag-pressure %v is outside 0 to 10", c.TagPressure)
	}
	for name, v := range map[string]struct {
		got     string
		allowed []string
	}{
		"feed": {c.Feed, []string{"events", "poll"}}, "counters": {c.Counters, []string{"cuesched", "cuebot"}},
		"log-level":  {c.LogLevel, []string{"debug", "info", "warn", "error"}},
		"log-format": {c.LogFormat, []string{"text", "json"}}, "policy": {c.Policy, []string{"best-fit", "epvm"}},
		"order": {c.Order, []string{"lottery", "strict"}},
	} {
		if !slices.Contains(v.allowed, v.got) {
			return fmt.Sprintf("%s %q", name, v.got)
		}
	}
	for _, a := range c.AllocTags {
		if a.Show == "" || a.Tag == "" || strings.Contains(a.Tag, ":") {
			return fmt.Sprintf("alloc-tags item %+v", a)
		}
	}
	for _, l := range [][]string{c.ManualTags, c.SelfishServices} {
		for _, item := range l {
			if strings.TrimSpace(item) == "" || strings.Contains(item, ",") {
				return fmt.Sprintf("list item %q", item)
			}
		}
	}
	if (c.RQDTLSCert == "") != (c.RQDTLSKey == "") || c.RQDTLSCert != "" && c.RQDTLSCA == "" {
		return "rqd-tls-cert, rqd-tls-key and rqd-tls-ca do not go together"
	}
	// The instance's sessions are found by application_name, which
	// PostgreSQL keeps to 63 bytes of printable ASCII.
	if len("cuesched/"+c.Instance) > 63 || c.Instance == "" || strings.ContainsFunc(c.Instance, func(r rune) bool {
		return r < ' ' || r > '~'
	}) {
		return fmt.Sprintf("instance %q", c.Instance)
	}
	if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil {
		return fmt.Sprintf("metrics-addr %q: %v", c.MetricsAddr, err)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Sprintf("metrics-addr %q: %v", c.MetricsAddr, err)
	}
	for name, dsn := range map[string]string{"db": c.DB, "pool-db": c.PoolDB} {
		if dsn != "" {
			if _, err := pgconn.ParseConfig(dsn); err != nil {
				return fmt.Sprintf("%s %q: %v", name, dsn, err)
			}
		}
	}
	return ""
}
