package config

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestHelpShowsTypesDefaultsAndOnlyTheCommandsSettings(t *testing.T) {
	var out bytes.Buffer
	if _, err := Load("run", []string{"--help"}, env(nil), nil, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	run := out.String()
	words := strings.Join(strings.Fields(run), " ") // help wraps anywhere
	for _, want := range []string{
		"usage: cuesched run [flags]",
		"--rqd-port int the port RQD's gRPC server listens on (default 8444) --",
		"--metrics-addr string address of the /metrics, /healthz and /readyz server (default :10844) --",
		"--feed events|poll how work is found:", "(default events) --",
		"--rqd-timeout duration deadline of one call to RQD (default 10s) --",
		"--dry-run book in the database", "(default false) --",
		"also --alloc_tags (default: every show and tag) --",
		"(default: the PG* environment variables) --",
	} {
		if !strings.Contains(words, want) {
			t.Errorf("run --help lacks %q:\n%s", want, run)
		}
	}
	explain := helpOf("explain")
	for _, want := range []string{"--db string", "--policy best-fit|epvm", "--config string"} {
		if !strings.Contains(explain, want) {
			t.Errorf("explain --help lacks %q:\n%s", want, explain)
		}
	}
	if strings.Contains(explain, "--rqd-port") || strings.Contains(explain, "--workers") {
		t.Errorf("explain --help lists settings of run it does not take:\n%s", explain)
	}
	for _, l := range strings.Split(run, "\n") {
		if len(l) > helpWidth {
			t.Errorf("help line wider than %d: %q", helpWidth, l)
		}
	}
}

// An unknown flag is one line naming the nearest flag the command takes and
// where its help is; nothing else is written.
func TestUnknownFlagIsOneLineWithAHint(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"run", []string{"--rqd-prot", "1"}, "unknown flag --rqd-prot (did you mean --rqd-port? see cuesched run --help)"},
		{"run", []string{"--rqd_port=1"}, "unknown flag --rqd_port (did you mean --rqd-port? see cuesched run --help)"},
		{"run", []string{"-polcy", "epvm"}, "unknown flag --polcy (did you mean --policy? see cuesched run --help)"},
		{"run", []string{"--frobnicate"}, "unknown flag --frobnicate (see cuesched run --help)"},
		{"explain", []string{"--rqd-port", "1"}, "--rqd-port is a setting of run, not of cuesched explain (see cuesched explain --help)"},
		{"migrate up", []string{"--db"}, "--db needs a value: --db=VALUE (see cuesched migrate up --help)"},
	} {
		var out bytes.Buffer
		_, err := Load(tc.cmd, tc.args, env(nil), nil, &out)
		var ce *Error
		if !errors.As(err, &ce) || err.Error() != tc.want {
			t.Errorf("%s %q: got %v, want the config error %q", tc.cmd, tc.args, err, tc.want)
		}
		if out.Len() > 0 {
			t.Errorf("%s %q wrote %q besides the error", tc.cmd, tc.args, out.String())
		}
	}
	_, err := Load("status", []string{"--jsn"}, env(nil), nil, &bytes.Buffer{}, Flag{Name: "json", Type: "bool"})
	if want := "unknown flag --jsn (did you mean --json? see cuesched status --help)"; err == nil || err.Error() != want {
		t.Errorf("status --jsn: %v, want %q", err, want)
	}
	// A command the table does not know names its settings in only.
	_, err = Load("show list", []string{"--dbb", "x"}, env(nil), []string{"db"}, &bytes.Buffer{})
	if want := "unknown flag --dbb (did you mean --db? see cuesched show list --help)"; err == nil || err.Error() != want {
		t.Errorf("show list --dbb: %v, want %q", err, want)
	}
	own := FlagError("grants", errors.New("flag provided but not defined: -rol"), []string{"role", "database", "feed"})
	if want := "unknown flag --rol (did you mean --role? see cuesched grants --help)"; own.Error() != want {
		t.Errorf("grants: %v, want %q", own, want)
	}
}

// One file serves every command: a command skips the settings of others,
// and still refuses a key naming none.
func TestOneFileForEveryCommand(t *testing.T) {
	file := t.TempDir() + "/c.yaml"
	writeFile(t, file, "db: postgres://db/cuebot\nrqd-port: 9000\npolicy: epvm\n")
	c, err := Load("status", []string{"--config", file}, env(nil), nil, &bytes.Buffer{})
	if err != nil || c.DB != "postgres://db/cuebot" || c.RQDPort != Default().RQDPort {
		t.Errorf("status with run's file: db %q rqd-port %d (%v)", c.DB, c.RQDPort, err)
	}
	c, err = Load("explain", []string{"--config", file}, env(nil), nil, &bytes.Buffer{})
	if err != nil || c.Policy != "epvm" {
		t.Errorf("explain with run's file: policy %q (%v)", c.Policy, err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"rqd-prot", "rqd-port", 1}, {"poliyc", "policy", 1}, {"kitten", "sitting", 3}, {"db", "", 2}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}
