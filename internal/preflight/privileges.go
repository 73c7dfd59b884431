package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/cuesched/cuesched/internal/grants"
)

// privilegesSQL finds the first (kind, name, privilege), counted from 1, the
// current role lacks (0: none). An object that does not exist is passed over
// (its CASE is NULL), and a schema the role cannot use raises no error: the
// objects are looked up in the catalogs by name and asked about by OID.
const privilegesSQL = `
SELECT coalesce((SELECT g.ord::int FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS g(kind, name, priv, ord)
  WHERE NOT CASE g.kind
         WHEN 'database' THEN has_database_privilege(current_database(), g.priv)
         WHEN 'schema' THEN (SELECT has_schema_privilege(n.oid, g.priv) FROM pg_namespace n WHERE n.nspname = g.name)
         WHEN 'table' THEN (SELECT has_table_privilege(c.oid, g.priv) FROM pg_class c
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = split_part(g.name, '.', 1) AND c.relname = split_part(g.name, '.', 2)
                              AND c.relkind IN ('r', 'p'))
         WHEN 'sequence' THEN (SELECT has_sequence_privilege(c.oid, g.priv) FROM pg_class c
                                JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = split_part(g.name, '.', 1) AND c.relname = split_part(g.name, '.', 2)
                                 AND c.relkind = 'S')
       END
  ORDER BY g.ord LIMIT 1), 0), current_user`

type privilege struct {
	kind            grants.Kind
	name, privilege string
}

func privileges() []privilege {
	var ps []privilege
	for _, g := range grants.List {
		for _, p := range g.Privileges {
			ps = append(ps, privilege{g.Kind, g.Name, p})
		}
	}
	return ps
}

// Privileges checks that the current role holds every privilege of
// grants.List, and names the first one it lacks, with the command that
// prints the SQL to give them all. Objects that do not exist are left to the
// checks of the schema and the migrations.
func Privileges(ctx context.Context, q Querier) error {
	ps := privileges()
	kinds, names, privs := make([]string, len(ps)), make([]string, len(ps)), make([]string, len(ps))
	for i, p := range ps {
		kinds[i], names[i], privs[i] = string(p.kind), p.name, p.privilege
	}
	var ord int
	var role string
	if err := q.QueryRow(ctx, privilegesSQL, kinds, names, privs).Scan(&ord, &role); err != nil {
		return fmt.Errorf("check the role's privileges: %w", err)
	}
	if ord < 1 || ord > len(ps) {
		return nil
	}
	p := ps[ord-1]
	what := string(p.kind) + " " + strings.TrimPrefix(p.name, "public.")
	if p.kind == grants.Database {
		what = "this database"
	}
	return fmt.Errorf("role %q lacks %s on %s: run `cuesched grants --role %s` and apply its SQL as the owner of Cuebot's tables",
		role, p.privilege, what, role)
}
