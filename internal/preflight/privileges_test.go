package preflight

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/grants"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// A role made by the SQL of `cuesched grants` alone passes the start-up
// check, holds nothing more than the list, and the check names each
// privilege taken away from it.
func TestPrivilegesOfARoleMadeByGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	// What PUBLIC holds by default must not hide a missing grant.
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`REVOKE CONNECT ON DATABASE %s FROM PUBLIC;
		REVOKE USAGE ON SCHEMA public FROM PUBLIC`, db.Name)); err != nil {
		t.Fatal(err)
	}
	role := db.NewRole(t, "sched", "CREATE ROLE %[1]s LOGIN")
	sql, err := grants.SQL(role, db.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, sql); err != nil {
		t.Fatalf("apply the grants: %v", err)
	}
	conn, err := pgx.Connect(ctx, db.DSN+" user="+role)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := Privileges(ctx, conn); err != nil {
		t.Fatalf("role made by cuesched grants: %v", err)
	}
	if err := Privileges(ctx, db.Pool); err != nil {
		t.Fatalf("superuser: %v", err)
	}

	// Nothing more on tables than the list holds.
	var want, got []string
	for _, g := range grants.List {
		if g.Kind == grants.Table {
			for _, p := range g.Privileges {
				want = append(want, g.Name+" "+p)
			}
		}
	}
	rows, err := db.Pool.Query(ctx, `SELECT table_schema || '.' || table_name || ' ' || privilege_type
		FROM information_schema.role_table_grants WHERE grantee = $1`, role)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("table grants held:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, p := range privileges() {
		on := fmt.Sprintf("%s %s", strings.ToUpper(string(p.kind)), p.name)
		what := string(p.kind) + " " + strings.TrimPrefix(p.name, "public.")
		if p.kind == grants.Database {
			on, what = "DATABASE "+db.Name, "this database"
		}
		t.Run(p.privilege+" on "+what, func(t *testing.T) {
			if _, err := db.Pool.Exec(ctx, fmt.Sprintf("REVOKE %s ON %s FROM %s", p.privilege, on, role)); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if _, err := db.Pool.Exec(ctx, fmt.Sprintf("GRANT %s ON %s TO %s", p.privilege, on, role)); err != nil {
					t.Fatal(err)
				}
			}()
			want := fmt.Sprintf(`role %q lacks %s on %s: run `+"`cuesched grants --role %s`", role, p.privilege, what, role)
			err := Privileges(ctx, conn)
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want one line with %q", err, want)
			}
		})
	}
}

func TestPrivilegesPassOverMissingObjects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bare := pgtest.NewDB(t, pgtest.Cuebot)
	role := bare.NewRole(t, "bare", "CREATE ROLE %[1]s LOGIN")
	sql, err := grants.SQL(role, bare.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	// Before `migrate up` the grants on schema cuesched cannot be applied;
	// the rest can, and the check leaves what is missing to the migrations'.
	var cuebotOnly []string
	for _, stmt := range strings.Split(sql, ";\n") {
		if !strings.Contains(stmt, `"cuesched"`) && !strings.Contains(stmt, "schema_migrations") && strings.TrimSpace(stmt) != "" {
			cuebotOnly = append(cuebotOnly, stmt)
		}
	}
	if _, err := bare.Pool.Exec(ctx, strings.Join(cuebotOnly, ";\n")); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, bare.DSN+" user="+role)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := Privileges(ctx, conn); err != nil {
		t.Fatalf("no cuesched schema yet: %v", err)
	}
}
