package preflight

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// CuebotSchema names the real cause of a refusal: no Cuebot schema, an old
// one, or a role that may not see or read it. None of the latter is told
// "too old".
func TestCuebotSchemaDiagnosis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	role := func(t *testing.T, db *pgtest.DB) string {
		name := fmt.Sprintf("reader_%d", time.Now().UnixNano())
		if _, err := db.Pool.Exec(ctx, "CREATE ROLE "+name+" LOGIN"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			db.Pool.Exec(context.Background(), "DROP OWNED BY "+name)
			db.Pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+name)
		})
		return name
	}
	check := func(t *testing.T, dsn string) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		return CuebotSchema(ctx, conn)
	}
	for _, tc := range []struct {
		name string
		// setup prepares the database and returns the DSN to check with.
		setup func(t *testing.T, db *pgtest.DB) string
		tpl   pgtest.Template
		want  []string // parts of the message; none for no error
	}{
		{"Cuebot V47", func(t *testing.T, db *pgtest.DB) string { return db.DSN }, pgtest.Cuebot, nil},
		{"empty database", func(t *testing.T, db *pgtest.DB) string { return db.DSN }, pgtest.Empty,
			[]string{"no Cuebot schema in database", "not a Cuebot database", "--db"}},
		{"schema older than V47", func(t *testing.T, db *pgtest.DB) string {
			if _, err := db.Pool.Exec(ctx, `ALTER TABLE layer DROP COLUMN ts_start_after`); err != nil {
				t.Fatal(err)
			}
			return db.DSN
		}, pgtest.Cuebot, []string{"layer.ts_start_after is missing; apply Cuebot migration V47"}},
		{"role that may not read the tables", func(t *testing.T, db *pgtest.DB) string {
			return db.DSN + " user=" + role(t, db)
		}, pgtest.Cuebot, []string{"may not read Cuebot's tables", "GRANT SELECT"}},
		{"role without USAGE on the schema", func(t *testing.T, db *pgtest.DB) string {
			if _, err := db.Pool.Exec(ctx, `REVOKE USAGE ON SCHEMA public FROM PUBLIC`); err != nil {
				t.Fatal(err)
			}
			return db.DSN + " user=" + role(t, db)
		}, pgtest.Cuebot, []string{"Cuebot's tables are in schema public", "lacks USAGE", "GRANT USAGE ON SCHEMA public"}},
		{"search_path without Cuebot's schema", func(t *testing.T, db *pgtest.DB) string {
			if _, err := db.Pool.Exec(ctx, `CREATE SCHEMA elsewhere`); err != nil {
				t.Fatal(err)
			}
			return db.DSN + " search_path=elsewhere"
		}, pgtest.Cuebot, []string{"Cuebot's tables are in schema public", "not on the search_path (elsewhere)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := pgtest.NewDB(t, tc.tpl)
			err := check(t, tc.setup(t, db))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected refusal: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no refusal")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q: %s", w, msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("not one line: %q", msg)
			}
			if tc.name != "schema older than V47" && strings.Contains(msg, "too old") {
				t.Errorf("misreported as an old schema: %s", msg)
			}
		})
	}
}

// Readable names, in one line, what a reader of tables lacks: Cuebot's
// schema, a table, or SELECT on it; nothing when the role may read them
// all, whatever it may not read besides.
func TestReadable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	reader := db.NewRole(t, "readable", `CREATE ROLE %[1]s LOGIN; GRANT SELECT ON host, job_history TO %[1]s`)
	conn, err := pgx.Connect(ctx, db.DSN+" user="+reader)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := Readable(ctx, conn, "--from", []string{"host", "job_history"}); err != nil {
		t.Errorf("tables the role may read refused: %v", err)
	}
	empty := pgtest.NewDB(t, pgtest.Empty)
	for _, tc := range []struct {
		q      Querier
		tables []string
		want   string
	}{
		{conn, []string{"host", "layer_history", "frame_history"},
			"role " + reader + " may not read layer_history, frame_history in database " + db.Name +
				" (permission denied): GRANT SELECT ON layer_history, frame_history TO " + reader + ", or give --from a role"},
		{conn, []string{"host", "no_such_history", "layer_history"}, "no table no_such_history on the search_path"},
		{empty.Pool, []string{"host", "job_history"}, "no Cuebot schema in database " + empty.Name},
	} {
		err := Readable(ctx, tc.q, "--from", tc.tables)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--from") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("Readable(%v) = %v, want one line containing %q and naming --from", tc.tables, err, tc.want)
		}
	}
}
