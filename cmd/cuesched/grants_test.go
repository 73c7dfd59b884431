package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/grants"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestGrantsQuotesTheRoleAndRejectsBadNames(t *testing.T) {
	t.Parallel()
	code, out := cli(t, nil, "grants", "--role", `Cue"Sched`, "--database", "cue bot")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{`ALTER ROLE "Cue""Sched" REPLICATION;`, `GRANT CONNECT ON DATABASE "cue bot" TO "Cue""Sched";`,
		`GRANT SELECT ON TABLE "public"."schema_migrations" TO "Cue""Sched";`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."proc" TO "Cue""Sched";`,
		`GRANT USAGE ON SCHEMA "cuesched" TO "Cue""Sched";`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"grants"}, "--role is empty"},
		{[]string{"grants", "--role", ""}, "--role is empty"},
		{[]string{"grants", "--role", "a\nb"}, "without control characters"},
		{[]string{"grants", "--role", "x", "--database", "a\tb"}, "without control characters"},
		{[]string{"grants", "--role", strings.Repeat("r", 64)}, "at most 63 bytes"},
		{[]string{"grants", "--role", "pg_monitor"}, "reserved"},
		{[]string{"grants", "--role", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"grants", "--role", "x", "--database", ""}, "--database is empty"},
	} {
		code, out := cli(t, nil, tc.args...)
		if code != 2 || !strings.Contains(out, tc.want) || strings.Contains(out, "GRANT") {
			t.Errorf("%q: exit %d, output %q; want exit 2 and %q", tc.args, code, out, tc.want)
		}
	}
	// Polling needs no REPLICATION: nothing more than the feed needs.
	code, out = cli(t, nil, "grants", "--role", "x", "--feed", "poll")
	if code != 0 || strings.Contains(out, "REPLICATION") || !strings.Contains(out, `GRANT USAGE ON SCHEMA "cuesched" TO "x";`) {
		t.Errorf("--feed poll: exit %d, output:\n%s\nwant the grants without REPLICATION", code, out)
	}
	if code, out := cli(t, nil, "grants", "--role", "x", "--feed", "push"); code != 2 || !strings.Contains(out, "--feed") {
		t.Errorf("--feed push: exit %d, output %q; want exit 2 naming --feed", code, out)
	}
	if code, out := cli(t, nil, "grants", "--help"); code != 0 || !strings.Contains(out, "psql") {
		t.Errorf("--help: exit %d, output %q", code, out)
	}
}

// `run` as a role lacking one of the grants exits 1 with one line naming it.
func TestRunRefusesARoleLackingAGrant(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	role := db.NewRole(t, "sched", "CREATE ROLE %[1]s LOGIN")
	sql, err := grants.SQL(role, db.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(t.Context(), sql+"; REVOKE SELECT ON host_stat FROM "+role); err != nil {
		t.Fatal(err)
	}
	code, out := cli(t, nil, "run", "--db", db.DSN+" user="+role, "--metrics-addr", "127.0.0.1:0")
	want := fmt.Sprintf(`cuesched run: role %q lacks SELECT on table host_stat: run `+"`cuesched grants --role %s`", role, role)
	if code != 1 || !strings.Contains(out, want+" and apply its SQL as the owner of Cuebot's tables\n") {
		t.Errorf("exit %d, output:\n%s\nwant exit 1 and the line %q", code, out, want)
	}
}
