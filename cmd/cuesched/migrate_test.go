package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/migrations"
)

// catalogOf lists the database's schemas, relations, functions, triggers and
// publications: what any migration could have added.
func catalogOf(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	var out string
	if err := db.Pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
		SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
		UNION ALL
		SELECT 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text
		  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_%'
		UNION ALL
		SELECT 'function ' || p.oid::regprocedure::text
		  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
		UNION ALL
		SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL
		SELECT 'publication ' || pubname FROM pg_publication) s(x)`).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// errorLines counts the lines the command printed as its error.
func errorLines(out, cmd string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "cuesched "+cmd+": ") {
			n++
		}
	}
	return n
}

// Defect 8: `migrate up` on a database without Cuebot's schema refuses in
// one line before touching anything (golang-migrate would have created its
// table and applied 0001).
func TestMigrateUpRefusesDatabaseWithoutCuebotSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, pgtest.Empty)
	before := catalogOf(t, db)
	code, out := cli(t, nil, "migrate", "up", "--db", db.URL)
	if code != 1 || !strings.Contains(out, "no Cuebot schema in database") || errorLines(out, "migrate") != 1 {
		t.Errorf("migrate up exited %d, want 1 with one line naming the missing Cuebot schema:\n%s", code, out)
	}
	if after := catalogOf(t, db); after != before {
		t.Errorf("migrate up changed the database:\n%s", diff(before, after))
	}
	// status only reads: it adds no migrations table either.
	if code, out := cli(t, nil, "migrate", "status", "--db", db.URL); code != 0 || !strings.Contains(out, "at version 0 of") {
		t.Errorf("migrate status exited %d:\n%s", code, out)
	}
	if after := catalogOf(t, db); after != before {
		t.Errorf("migrate status changed the database:\n%s", diff(before, after))
	}
}

// A migration that failed half-way leaves the database dirty; status says
// which version and what to force, and force then up recovers.
func TestMigrateForceRecoversDirtyDatabase(t *testing.T) {
	t.Parallel()
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDB(t, pgtest.Cuebot)
	// 0001 creates schema cuesched first thing, so it fails on this one.
	if _, err := db.Pool.Exec(t.Context(), `CREATE SCHEMA cuesched`); err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, nil, "migrate", "up", "--db", db.URL); code != 1 {
		t.Fatalf("migrate up over a conflicting schema exited %d:\n%s", code, out)
	}
	code, out := cli(t, nil, "migrate", "status", "--db", db.URL)
	for _, want := range []string{"dirty", "migration 1 failed", "cuesched migrate force 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate status (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
	code, out = cli(t, nil, "migrate", "up", "--db", db.URL)
	if code != 1 || !strings.Contains(out, "cuesched migrate force 0") || errorLines(out, "migrate") != 1 {
		t.Errorf("migrate up on a dirty database exited %d:\n%s", code, out)
	}

	if _, err := db.Pool.Exec(t.Context(), `DROP SCHEMA cuesched`); err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, nil, "migrate", "force", "0", "--db", db.URL); code != 0 || !strings.Contains(out, "at version 0 of") ||
		strings.Contains(out, "dirty") {
		t.Fatalf("migrate force 0 exited %d:\n%s", code, out)
	}
	want := fmt.Sprintf("at version %d of %d", latest, latest)
	if code, out := cli(t, nil, "migrate", "up", "--db", db.URL); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("migrate up after force exited %d:\n%s", code, out)
	}

	// Dirty by hand at the newest version: force it back clean, then up
	// has nothing to do.
	if _, err := db.Pool.Exec(t.Context(), `UPDATE schema_migrations SET dirty = true`); err != nil {
		t.Fatal(err)
	}
	if _, out := cli(t, nil, "migrate", "status", "--db", db.URL); !strings.Contains(out, fmt.Sprintf("migration %d failed", latest)) ||
		!strings.Contains(out, fmt.Sprintf("cuesched migrate force %d", latest-1)) {
		t.Errorf("migrate status of a hand-made dirty state:\n%s", out)
	}
	if code, out := cli(t, nil, "migrate", "force", fmt.Sprint(latest), "--db", db.URL); code != 0 || !strings.Contains(out, want) ||
		strings.Contains(out, "dirty") {
		t.Fatalf("migrate force %d exited %d:\n%s", latest, code, out)
	}
	if code, out := cli(t, nil, "migrate", "up", "--db", db.URL); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("migrate up after the second force exited %d:\n%s", code, out)
	}

	for _, bad := range [][]string{{"migrate", "force"}, {"migrate", "force", "abc"}, {"migrate", "force", fmt.Sprint(latest + 1)}} {
		code, out := cli(t, nil, append(bad, "--db", db.URL)...)
		if code != 2 || !strings.Contains(out, fmt.Sprintf("0 to %d", latest)) {
			t.Errorf("%v exited %d, want 2 naming the versions:\n%s", bad, code, out)
		}
	}
}

func TestMigrateHelp(t *testing.T) {
	t.Parallel()
	code, out := cli(t, nil, "migrate", "--help")
	if code != 0 {
		t.Errorf("migrate --help exited %d:\n%s", code, out)
	}
	for _, want := range []string{"up", "down", "status", "force VERSION", "--db"} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate --help lacks %q:\n%s", want, out)
		}
	}
	if code, out := cli(t, nil, "migrate"); code != 2 || !strings.Contains(out, "force VERSION") {
		t.Errorf("migrate alone exited %d, want 2 with the subcommands:\n%s", code, out)
	}
}

// status and explain on a Cuebot database without cuesched's migrations say
// to run them, not the SQL error of the first missing table.
func TestStatusAndExplainBeforeMigrateUp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	if _, err := seed.Load(t.Context(), db.Pool, explainFarm(), 7); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status", "--db", db.URL},
		{"status", "--json", "--db", db.URL},
		{"explain", "--job", "film-fits", "--db", db.URL},
	} {
		code, out := cli(t, nil, args...)
		if code != 1 || !strings.Contains(out, "run `cuesched migrate up") || strings.Contains(out, "does not exist") ||
			errorLines(out, args[0]) != 1 {
			t.Errorf("%v exited %d, want 1 with one line saying to run cuesched migrate up:\n%s", args, code, out)
		}
	}
}
