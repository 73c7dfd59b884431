package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// helpFlags are the flags each command's --help must list, no more: its own
// and the settings it reads. A new command adds its line here.
var helpFlags = map[string][]string{
	"run": {"db", "pool-db", "config", "facility", "alloc-tags", "manual-tags", "metrics-addr", "rqd-port",
		"rqd-timeout", "report-grace", "rqd-tls-ca", "rqd-tls-cert", "rqd-tls-key", "dry-run", "feed", "poll-interval", "counters",
		"log-level", "log-format", "log-summary-interval", "host-ping-max-age", "policy", "order", "selfish-services", "locality",
		"memory-from-history", "memory-headroom", "reservations", "reservation-after", "batch-min",
		"batch-max", "launch-workers", "instance", "lease", "workers", "tag-pressure", "audit-interval", "outbox-age"},
	"migrate": {"db", "config"},
	"status":  {"json", "db", "config"},
	"audit":   {"json", "db", "config", "counters", "outbox-age"},
	"explain": {"job", "layer", "json", "db", "config", "host-ping-max-age", "policy", "order", "selfish-services", "locality",
		"memory-from-history", "memory-headroom", "reservations", "reservation-after"},
	"grants":  {"role", "database", "feed"},
	"sim":     {"list", "scenario", "seed", "from-db", "since", "variant", "json", "html"},
	"version": nil,
	"show":    nil, // its subcommands list theirs (TestShowUsage)
}

var helpFlagLine = regexp.MustCompile(`(?m)^  --([a-z][a-z-]*)`)

// Every command's --help (and -h) exits 0 and lists only its own flags,
// each with its meaning and, where it takes a value, its type.
func TestEveryCommandHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		want, ok := helpFlags[c.name]
		if !ok {
			t.Errorf("command %s has no line in helpFlags: add the flags its --help must list", c.name)
			continue
		}
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {c.name, "-help"}} {
			code, out := cli(t, nil, args...)
			if code != 0 || !strings.HasPrefix(out, "usage: cuesched "+c.name) {
				t.Errorf("%q exited %d, want 0 and its usage:\n%s", args, code, out)
				continue
			}
			var got []string
			for _, m := range helpFlagLine.FindAllStringSubmatch(out, -1) {
				got = append(got, m[1])
			}
			if !slices.Equal(sorted(got), sorted(want)) {
				t.Errorf("%q lists the flags %q, want %q:\n%s", args, got, want, out)
			}
		}
	}
	// Help wins wherever it is asked for: after a subcommand, or beside a
	// missing argument.
	for _, args := range [][]string{{"migrate", "up", "--help"}, {"migrate", "force", "-h"}, {"explain", "--help", "--job"}} {
		if code, out := cli(t, nil, args...); code != 0 || !strings.HasPrefix(out, "usage: ") {
			t.Errorf("%q exited %d, want 0 and the usage:\n%s", args, code, out)
		}
	}
	code, out := cli(t, nil, "run", "--help")
	for _, want := range []string{"--rqd-port int", "(default 8444)", "--feed events|poll", "(default :10844)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("run --help lacks %q:\n%s", want, out)
		}
	}
}

func sorted(xs []string) []string {
	ys := slices.Clone(xs)
	slices.Sort(ys)
	return ys
}

// An unknown flag is one line, with the nearest flag of the command when
// one is close, and exits 2.
func TestUnknownFlagOneLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--rqd-prot", "9"}, "cuesched run: unknown flag --rqd-prot (did you mean --rqd-port? see cuesched run --help)\n"},
		{[]string{"migrate", "up", "--bd", "x"}, "cuesched migrate: unknown flag --bd (did you mean --db? see cuesched migrate up --help)\n"},
		{[]string{"explain", "--job", "j", "--workers", "2"}, "cuesched explain: --workers is a setting of run, not of cuesched explain (see cuesched explain --help)\n"},
		{[]string{"status", "--frobnicate"}, "cuesched status: unknown flag --frobnicate (see cuesched status --help)\n"},
		{[]string{"status", "--jsn"}, "cuesched status: unknown flag --jsn (did you mean --json? see cuesched status --help)\n"},
		{[]string{"explain", "--jbo", "x"}, "cuesched explain: unknown flag --jbo (did you mean --job? see cuesched explain --help)\n"},
		{[]string{"grants", "--rol", "x"}, "cuesched grants: unknown flag --rol (did you mean --role? see cuesched grants --help)\n"},
	} {
		code, out := cli(t, nil, tc.args...)
		if code != 2 || out != tc.want {
			t.Errorf("%q exited %d with\n%q\nwant 2 with\n%q", tc.args, code, out, tc.want)
		}
	}
}
