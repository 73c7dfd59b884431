package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every malformed setting, wherever it is given, exits 2 with one line
// naming it, before anything connects (the databases here do not exist), and
// never prints a password.
func TestMalformedSettingsExit2(t *testing.T) {
	t.Parallel()
	const secret = "Sup3rS3cret"
	nowhere := "postgres://cue:" + secret + "@127.0.0.1:1/cuebot?connect_timeout=1"
	file := func(yaml string) string {
		p := filepath.Join(t.TempDir(), "cuesched.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"tag-pressure NaN", []string{"run", "--db", nowhere, "--tag-pressure", "NaN"}, nil,
			`--tag-pressure: "NaN" is not a number from 0 to 10`},
		{"negative lease from the environment", []string{"run", "--db", nowhere},
			map[string]string{"CUESCHED_LEASE": "-1s"}, `--lease: "-1s" is not a duration of at least 1s (e.g. 5s, 2m) (from CUESCHED_LEASE)`},
		{"db behind a good pool-db", []string{"run", "--db", "postgres://cue:" + secret + "@h:notaport/cuebot", "--pool-db", nowhere}, nil,
			"--db: postgres://xxxxx: cannot parse"},
		{"metrics-addr without a port", []string{"run", "--db", nowhere, "--metrics-addr", "10844"}, nil,
			`--metrics-addr: "10844" is not host:port`},
		{"empty instance", []string{"run", "--db", nowhere, "--instance="}, nil,
			`--instance: "" is not 1 to 54 printable ASCII characters`},
		{"null in the file", []string{"run", "--db", nowhere, "--config", file("facility: null\n")}, nil,
			"--facility: "},
		{"status, key=value db", []string{"status", "--db", "host=h port=x password=" + secret}, nil,
			"--db: host=h port=x password=xxxxx: cannot parse"},
		{"migrate, db null in the file", []string{"migrate", "up"}, map[string]string{"CUESCHED_CONFIG": file("db: ~\n")},
			"null is not a value (remove the key to keep the default)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := cli(t, tc.env, tc.args...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want 2 and %q; output:\n%s", code, tc.want, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the password appears in the output:\n%s", out)
			}
			if n := strings.Count(out, "\n"); n != 1 {
				t.Errorf("%d lines, want one:\n%s", n, out)
			}
		})
	}
}
