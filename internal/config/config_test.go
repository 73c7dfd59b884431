package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPrecedenceFileEnvFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cuesched.yaml")
	if err := os.WriteFile(file, []byte("rqd-port: 9000\nfeed: poll\nmanual_tags: [a, b]\nlease: 9s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("run", []string{"--config", file, "--rqd-port=9002", "--alloc_tags", "show1:general, show2:gpu"},
		env(map[string]string{"CUESCHED_RQD_PORT": "9001", "CUESCHED_FEED": "events", "CUESCHED_DRY_RUN": "true"}), nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.RQDPort != 9002 {
		t.Errorf("rqd-port %d: flags must win over env and file", c.RQDPort)
	}
	if c.Feed != "events" {
		t.Errorf("feed %s: env must win over file", c.Feed)
	}
	if !c.DryRun || c.Lease != 9*time.Second {
		t.Errorf("dry-run %v lease %v", c.DryRun, c.Lease)
	}
	if !reflect.DeepEqual(c.ManualTags, []string{"a", "b"}) {
		t.Errorf("manual tags %v", c.ManualTags)
	}
	want := []AllocTag{{"show1", "general"}, {"show2", "gpu"}}
	if !reflect.DeepEqual(c.AllocTags, want) {
		t.Errorf("alloc tags %v, want %v", c.AllocTags, want)
	}
}

func TestBadValuesNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--alloc-tags", "nocolon"}, nil, `--alloc-tags: "nocolon" is not show:tag`},
		{[]string{"--alloc-tags", "a:b:c"}, nil, `--alloc-tags: "a:b:c" is not show:tag`},
		{[]string{"--rqd-port", "70000"}, nil, `--rqd-port: "70000" is not a whole number from 1 to 65535`},
		{[]string{"--feed", "kafka"}, nil, `--feed: "kafka" is not one of events, poll`},
		{nil, map[string]string{"CUESCHED_COUNTERS": "both"}, `--counters: "both" is not one of cuesched, cuebot (from CUESCHED_COUNTERS)`},
		{[]string{"--no-such-flag"}, nil, "unknown flag --no-such-flag (see cuesched run --help)"},
		{[]string{"--batch-min", "10", "--batch-max", "5"}, nil, "--batch-min: 10 is above --batch-max 5"},
		{[]string{"stray"}, nil, `unexpected argument "stray"`},
		{[]string{"--tag-pressure", "-1"}, nil, `--tag-pressure: "-1" is not a number from 0 to 10`},
		{[]string{"--log-summary-interval", "100ms"}, nil, `--log-summary-interval: "100ms" is not a duration of at least 1s`},
		{[]string{"--tag-pressure", "NaN"}, nil, `--tag-pressure: "NaN" is not a number from 0 to 10`},
		{[]string{"--instance="}, nil, `--instance: "" is not 1 to 54 printable ASCII characters`},
		{[]string{"--instance", "render-ü"}, nil, `--instance: "render-ü" is not 1 to 54 printable ASCII characters`},
		{[]string{"--instance", strings.Repeat("n", 55)}, nil, "is not 1 to 54 printable ASCII characters"},
		{[]string{"--metrics-addr", "10844"}, nil, `--metrics-addr: "10844" is not host:port, e.g. :10844`},
		{nil, map[string]string{"CUESCHED_METRICS_ADDR": ":99999"}, `--metrics-addr: ":99999" is not host:port`},
		{[]string{"--db", "postgres://u:s3cret@h:notaport/db"}, nil, "--db: postgres://xxxxx: cannot parse"},
		{[]string{"--pool-db", "host=h port=x"}, nil, "--pool-db: host=h port=x: cannot parse `host=h port=x`: invalid port"},
	} {
		_, err := Load("run", tc.args, env(tc.env), nil, io.Discard)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want a config error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestTagPressure(t *testing.T) {
	c, err := Load("run", nil, env(nil), nil, io.Discard)
	if err != nil || c.TagPressure != 0.5 {
		t.Fatalf("default tag pressure %v (%v), want 0.5", c.TagPressure, err)
	}
	c, err = Load("run", []string{"--tag-pressure", "0"}, env(nil), nil, io.Discard)
	if err != nil || c.TagPressure != 0 {
		t.Fatalf("--tag-pressure 0: %v (%v), want off", c.TagPressure, err)
	}
}

func TestUnknownFileKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("rqd_prot: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load("run", []string{"--config", file}, env(nil), nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unknown setting "rqd_prot" (did you mean rqd-port?)`) {
		t.Fatalf("got %v", err)
	}
}

func TestOnlyLimitsFlags(t *testing.T) {
	_, err := Load("migrate", []string{"--rqd-port", "1"}, env(nil), []string{"db"}, io.Discard)
	if err == nil {
		t.Fatal("a flag the command does not take was accepted")
	}
}

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://cue:s3cret@db:5432/cuebot?sslmode=disable", "postgres://cue:xxxxx@db:5432/cuebot?sslmode=disable"},
		{"postgresql://db/cuebot?password=s3cret&user=cue", "postgresql://db/cuebot?password=xxxxx&user=cue"},
		{"host=db user=cue password=s3cret dbname=cuebot", "host=db user=cue password=xxxxx dbname=cuebot"},
		{"host=db password = 'se cret' dbname=x", "host=db password = xxxxx dbname=x"},
		{"host=db dbname=x", "host=db dbname=x"},
	} {
		if got := RedactDSN(tc.in); got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for _, s := range Secrets(tc.in) {
			if strings.Contains(RedactDSN(tc.in), s) {
				t.Errorf("secret %q survives in %q", s, RedactDSN(tc.in))
			}
		}
	}
	if got := Scrub("failed: password s3cret rejected", Secrets("host=x password=s3cret")); strings.Contains(got, "s3cret") {
		t.Errorf("Scrub left the secret: %s", got)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A malformed value in the file is refused naming the setting, like one
// given as a flag: a YAML null too, which would otherwise set a text
// setting to "null", "~" or nothing at all.
func TestBadFileValuesNameTheSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	for _, tc := range []struct{ yaml, want string }{
		{"facility: null\n", "--facility: " + file + ": null is not a value (remove the key to keep the default)"},
		{"instance: ~\n", "--instance: " + file + ": null is not a value"},
		{"db:\n", "--db: " + file + ": null is not a value"},
		{"manual-tags: [a, ~]\n", "--manual-tags: " + file + ": null is not a value"},
		{"lease: [1, [2]]\n", "--lease: " + file + ": list items must be plain values"},
		{"lease: {a: 1}\n", "--lease: " + file + ": must be a value or a list of values"},
		{"tag-pressure: .nan\n", `--tag-pressure: ".nan" is not a number from 0 to 10`},
		{"- a\n", "--config: " + file + ": yaml: unmarshal errors"},
		{"lease: 1s\nlease: 2s\n", `--config: ` + file + `: yaml: unmarshal errors:   line 2: mapping key "lease" already defined`},
	} {
		writeFile(t, file, tc.yaml)
		_, err := Load("run", []string{"--config", file}, env(nil), nil, io.Discard)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(strings.ReplaceAll(err.Error(), "\n", " "), tc.want) {
			t.Errorf("%q: got %v, want a config error containing %q", tc.yaml, err, tc.want)
		}
	}
}

// The default instance name is one --instance would accept, whatever the
// host is called: a long or non-ASCII host name is cut and cleaned, and the
// process id stays.
func TestDefaultInstanceIsAValidName(t *testing.T) {
	for _, host := range []string{"render-01", strings.Repeat("pod-name-", 10), "hôte-ü", ""} {
		name := defaultInstance(host, 4194304)
		var c Config
		if err := instanceName(&c.Instance).set(name); err != nil || !strings.HasSuffix(name, "-4194304") {
			t.Errorf("host %q: default %q: %v", host, name, err)
		}
	}
}
