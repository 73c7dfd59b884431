package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/postgres" // the migrate CLI's postgres:// driver
	_ "github.com/golang-migrate/migrate/v4/source/file"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cli runs cuesched in-process and returns its exit code and output.
func cli(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := realMain(context.Background(), args, &environment{stdout: &out, stderr: &out,
		getenv: func(k string) string { return env[k] }})
	return code, out.String()
}

func TestHelpListsEveryCommand(t *testing.T) {
	t.Parallel()
	code, out := cli(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("--help does not list %s:\n%s", c.name, out)
		}
	}
	if code, _ := cli(t, nil, "frobnicate"); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
}

// The demo is a command of its own, which alone links the test world: the
// production binary has no demo, and says where it went.
func TestDemoIsItsOwnCommand(t *testing.T) {
	t.Parallel()
	_, help := cli(t, nil, "--help")
	if strings.Contains(help, "  demo ") || !strings.Contains(help, "cuesched-demo") {
		t.Errorf("--help lists a demo command or does not name cuesched-demo:\n%s", help)
	}
	code, out := cli(t, nil, "demo")
	if code != 2 || !strings.Contains(out, "cuesched-demo") {
		t.Errorf("cuesched demo exited %d, want 2 and a pointer to cuesched-demo:\n%s", code, out)
	}
}

// Every way `run` can be refused before it starts exits non-zero with one
// clear line, and the password of the DSN appears nowhere.
func TestRunRefusals(t *testing.T) {
	t.Parallel()
	old := pgtest.NewDB(t, pgtest.Cuebot)
	if _, err := old.Pool.Exec(t.Context(), `ALTER TABLE layer DROP COLUMN ts_start_after`); err != nil {
		t.Fatal(err)
	}
	// The test cluster trusts every local connection, so a password is
	// accepted and ignored: enough to prove it never reaches the output.
	const secret = "Sup3rS3cret"
	withPW := func(url string) string { return strings.Replace(url, "postgres@", "postgres:"+secret+"@", 1) }
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"malformed alloc-tags", []string{"run", "--alloc-tags", "showonly", "--db", withPW(old.URL)}, nil, 2,
			`--alloc-tags: "showonly" is not show:tag`},
		{"malformed pool-db", []string{"run", "--db", withPW(old.URL), "--metrics-addr", "127.0.0.1:0",
			"--pool-db", "postgres://cue:" + secret + "@127.0.0.1:notaport/cuebot"}, nil, 2,
			"--pool-db: postgres://xxxxx: cannot parse"},
		{"unknown flag", []string{"run", "--frobnicate", "--db", withPW(old.URL)}, nil, 2,
			"unknown flag --frobnicate (see cuesched run --help)"},
		{"schema older than V47", []string{"run", "--db", withPW(old.URL), "--metrics-addr", "127.0.0.1:0"}, nil, 1,
			"layer.ts_start_after is missing; apply Cuebot migration V47"},
		{"unreachable database", []string{"run", "--metrics-addr", "127.0.0.1:0"},
			map[string]string{"CUESCHED_DB": "postgres://cue:" + secret + "@127.0.0.1:1/cuebot?connect_timeout=2"}, 1,
			"connect to postgres://cue:xxxxx@127.0.0.1:1/cuebot"},
		{"unreachable database, key=value", []string{"run", "--metrics-addr", "127.0.0.1:0", "--db",
			"host=127.0.0.1 port=1 user=cue password=" + secret + " dbname=cuebot connect_timeout=2"}, nil, 1,
			"password=xxxxx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := cli(t, tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			if strings.Contains(out, secret) {
				t.Errorf("the password appears in the output:\n%s", out)
			}
			// Usage text aside, the error itself is one line.
			var errLines int
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "cuesched run: ") {
					errLines++
				}
			}
			if errLines != 1 {
				t.Errorf("%d error lines, want 1:\n%s", errLines, out)
			}
		})
	}
}

// Defect 9: a DSN given as a positional argument is never printed with its
// password, and the message says to give it as --db.
func TestPositionalDSNIsNotEchoed(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"postgres://u:secret@h/db", "host=h user=u password=secret dbname=db"} {
		for _, args := range [][]string{
			{"run", dsn}, {"migrate", dsn}, {"migrate", "up", dsn}, {"migrate", "down", dsn}, {"migrate", "status", dsn},
			{"migrate", "force", dsn}, {"migrate", "force", "1", dsn}, {"status", dsn}, {"status", "--json", dsn},
			{"explain", "--job", "x", dsn}, {"version", dsn}, {dsn},
		} {
			code, out := cli(t, nil, args...)
			if code != 2 {
				t.Errorf("%q exited %d, want 2", args, code)
			}
			if strings.Contains(out, "secret") {
				t.Errorf("%q prints the password:\n%s", args, out)
			}
			if !strings.Contains(out, "--db") {
				t.Errorf("%q does not say to use --db:\n%s", args, out)
			}
		}
	}
}

// schemaDump is the database's schema as pg_dump prints it, without
// golang-migrate's bookkeeping table.
func schemaDump(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(db.Cluster.BinDir, "pg_dump"), "--schema-only", "--no-owner",
		"--exclude-table=schema_migrations", "--dbname="+db.URL)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	// pg_dump wraps its output in \restrict lines with a random key.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "\\restrict ") && !strings.HasPrefix(l, "\\unrestrict ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func TestMigrationsUpDownLeaveCuebotSchemaAsItWas(t *testing.T) {
	t.Parallel()
	t.Run("migrate library with the CLI's driver and file source", func(t *testing.T) {
		db := pgtest.NewDB(t, pgtest.Cuebot)
		before := schemaDump(t, db)
		m, err := migrate.New("file://../../migrations", db.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Up(); err != nil {
			t.Fatalf("up: %v", err)
		}
		if schemaDump(t, db) == before {
			t.Fatal("up changed nothing")
		}
		if err := m.Down(); err != nil {
			t.Fatalf("down: %v", err)
		}
		if after := schemaDump(t, db); after != before {
			t.Errorf("schema after up+down differs:\n%s", diff(before, after))
		}
	})
	t.Run("cuesched migrate", func(t *testing.T) {
		db := pgtest.NewDB(t, pgtest.Cuebot)
		before := schemaDump(t, db)
		code, out := cli(t, nil, "migrate", "up", "--db", db.DSN)
		if code != 0 {
			t.Fatalf("migrate up exited %d: %s", code, out)
		}
		if !regexp.MustCompile(`at version (\d+) of (\d+)`).MatchString(out) {
			t.Errorf("migrate up said %q", out)
		}
		code, out = cli(t, nil, "migrate", "status", "--db", db.DSN)
		if code != 0 || !strings.Contains(out, "version") {
			t.Fatalf("migrate status exited %d: %s", code, out)
		}
		code, out = cli(t, nil, "migrate", "down", "--db", db.DSN)
		if code != 0 || !strings.Contains(out, "at version 0 of") {
			t.Fatalf("migrate down exited %d: %s", code, out)
		}
		if after := schemaDump(t, db); after != before {
			t.Errorf("schema after up+down differs:\n%s", diff(before, after))
		}
		if code, _ := cli(t, nil, "migrate", "sideways", "--db", db.DSN); code != 2 {
			t.Errorf("migrate sideways exited %d, want 2", code)
		}
	})
}

// diff shows the lines only one side has.
func diff(a, b string) string {
	as, bs := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		as[l] = true
	}
	for _, l := range strings.Split(b, "\n") {
		bs[l] = true
	}
	var out strings.Builder
	for l := range as {
		if !bs[l] {
			fmt.Fprintf(&out, "- %s\n", l)
		}
	}
	for l := range bs {
		if !as[l] {
			fmt.Fprintf(&out, "+ %s\n", l)
		}
	}
	return out.String()
}
