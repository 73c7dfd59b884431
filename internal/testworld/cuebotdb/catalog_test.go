package cuebotdb_test

import (
	"context"
	"embed"
	"encoding/csv"
	"io"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

//go:embed catalog/*.tsv
var catalog embed.FS

// readTSV returns the catalog file's rows (header dropped), each row's fields
// joined by tabs. Index definitions span lines, so rows are split on lines
// that start a new table name.
func readTSV(t *testing.T, name string) []string {
	t.Helper()
	f, err := catalog.Open("catalog/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if name == "indexes.tsv" {
		var rows []string
		for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n")[1:] {
			if tab := strings.IndexByte(line, '\t'); tab > 0 && strings.HasPrefix(line[tab+1:], "CREATE ") {
				rows = append(rows, line)
			} else {
				rows[len(rows)-1] += "\n" + line
			}
		}
		return rows
	}
	r := csv.NewReader(strings.NewReader(string(raw)))
	r.Comma, r.LazyQuotes, r.FieldsPerRecord = '\t', true, -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, rec := range recs[1:] {
		rows = append(rows, strings.Join(rec, "\t"))
	}
	return rows
}

func queryRows(t *testing.T, pool *pgxpool.Pool, sql string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, v := range vals {
			s, _ := v.(string)
			fields = append(fields, s)
		}
		out = append(out, strings.Join(fields, "\t"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffSets fails the test with every row only one side has.
func diffSets(t *testing.T, what string, want, got []string) {
	t.Helper()
	sort.Strings(want)
	sort.Strings(got)
	for _, w := range want {
		if _, found := slices.BinarySearch(got, w); !found {
			t.Errorf("%s: catalog has, schema lacks: %q", what, w)
		}
	}
	for _, g := range got {
		if _, found := slices.BinarySearch(want, g); !found {
			t.Errorf("%s: schema has, catalog lacks: %q", what, g)
		}
	}
}

// The Cuebot-compatible schema must match the catalog of the real Cuebot
// schema exactly: columns with types, defaults and nullability, constraints,
// indexes and triggers with their conditions.
func TestSchemaMatchesCatalog(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Cuebot)
	tables := map[string]bool{}
	for _, row := range readTSV(t, "columns.tsv") {
		tables[strings.SplitN(row, "\t", 2)[0]] = true
	}
	var names []string
	for n := range tables {
		names = append(names, "'"+n+"'")
	}
	in := "(" + strings.Join(names, ",") + ")"

	t.Run("columns", func(t *testing.T) {
		got := queryRows(t, db.Pool, `
			SELECT c.relname::text, a.attname::text,
			       -- The catalog gives timestamp types without their precision.
			       replace(replace(format_type(a.atttypid, a.atttypmod), 'character varying', 'varchar'), 'timestamp(6)', 'timestamp'),
			       CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END,
			       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
			FROM pg_attribute a
			JOIN pg_class c ON c.oid = a.attrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
			LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped`)
		diffSets(t, "column", readTSV(t, "columns.tsv"), got)
	})
	t.Run("constraints", func(t *testing.T) {
		got := queryRows(t, db.Pool, `
			SELECT c.relname::text, k.conname::text, pg_get_constraintdef(k.oid)
			FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
			WHERE c.relname IN `+in+` AND k.contype IN ('p', 'u', 'f')`)
		diffSets(t, "constraint", readTSV(t, "constraints.tsv"), got)
	})
	t.Run("indexes", func(t *testing.T) {
		got := queryRows(t, db.Pool, `
			SELECT tablename::text, indexdef FROM pg_indexes
			WHERE schemaname = 'public' AND tablename IN `+in)
		// The catalog lists indexes of the tables the scheduler reads; every
		// one of them must exist as written.
		want := readTSV(t, "indexes.tsv")
		listed := map[string]bool{}
		for _, w := range want {
			listed[strings.SplitN(w, "\t", 2)[0]] = true
		}
		var gotListed []string
		for _, g := range got {
			if listed[strings.SplitN(g, "\t", 2)[0]] {
				gotListed = append(gotListed, g)
			}
		}
		diffSets(t, "index", want, gotListed)
	})
	t.Run("triggers", func(t *testing.T) {
		got := queryRows(t, db.Pool, `
			SELECT c.relname::text, tg.tgname::text,
			       CASE WHEN tg.tgtype & 2 <> 0 THEN 'BEFORE' WHEN tg.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
			       array_to_string(array_remove(ARRAY[
			           CASE WHEN tg.tgtype & 4 <> 0 THEN 'INSERT' END,
			           CASE WHEN tg.tgtype & 8 <> 0 THEN 'DELETE' END,
			           CASE WHEN tg.tgtype & 16 <> 0 THEN 'UPDATE' END], NULL), ' OR '),
			       CASE WHEN tg.tgtype & 1 <> 0 THEN 'ROW' ELSE 'STATEMENT' END,
			       coalesce(substring(pg_get_triggerdef(tg.oid) from 'WHEN \((.*)\) EXECUTE'), ''),
			       p.proname::text || '()'
			FROM pg_trigger tg
			JOIN pg_class c ON c.oid = tg.tgrelid
			JOIN pg_proc p ON p.oid = tg.tgfoid
			WHERE NOT tg.tgisinternal AND c.relname IN `+in)
		want := readTSV(t, "triggers.tsv")
		for i, w := range want {
			// Event lists are compared as sets: normalise the catalog's order.
			f := strings.Split(w, "\t")
			ev := strings.Split(f[3], " OR ")
			order := map[string]int{"INSERT": 0, "DELETE": 1, "UPDATE": 2}
			sort.Slice(ev, func(a, b int) bool { return order[ev[a]] < order[ev[b]] })
			f[3] = strings.Join(ev, " OR ")
			want[i] = strings.Join(f, "\t")
		}
		diffSets(t, "trigger", want, got)
	})
}
