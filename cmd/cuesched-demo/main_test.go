package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// demo runs cuesched-demo in-process and returns its exit code and output.
func demo(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := realMain(context.Background(), args, &out, &out, func(string) string { return "" })
	return code, out.String()
}

func TestHelp(t *testing.T) {
	code, out := demo(t, "--help")
	if code != 0 || !strings.Contains(out, "usage: cuesched-demo") {
		t.Errorf("--help exited %d, want 0 and a usage:\n%s", code, out)
	}
}

// A DSN given as an argument is never printed with its password, and the
// message says the demo takes no database (it starts its own).
func TestPositionalDSNIsNotEchoed(t *testing.T) {
	for _, dsn := range []string{"postgres://u:secret@h/db", "host=h user=u password=secret dbname=db"} {
		code, out := demo(t, dsn)
		if code != 2 {
			t.Errorf("%q exited %d, want 2", dsn, code)
		}
		if strings.Contains(out, "secret") {
			t.Errorf("%q prints the password:\n%s", dsn, out)
		}
		if !strings.Contains(out, "--db") {
			t.Errorf("%q does not say where --db goes:\n%s", dsn, out)
		}
	}
}
