package preflight

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Readable is the check of a read-only command reading tables beyond what
// it shares with run (flag names the setting that gave the database, e.g.
// --from-db): it refuses, in one line, a database without Cuebot's schema
// on the search_path (diagnosed as CuebotSchema does), a table of tables
// missing there, and one the current role may not SELECT. Like
// CuebotSchema it reads only the catalog; unlike it, it asks for no
// migration of Cuebot's newer than the tables it is given.
func Readable(ctx context.Context, q Querier, flag string, tables []string) error {
	all := slices.Clone(coreTables)
	for _, t := range tables {
		if !slices.Contains(all, t) {
			all = append(all, t)
		}
	}
	var database, role, searchPath string
	var missing, unreadable []string
	if err := q.QueryRow(ctx, `SELECT current_database(), current_user, current_setting('search_path'),
		coalesce(array_agg(t ORDER BY i) FILTER (WHERE to_regclass(t) IS NULL), '{}'),
		coalesce(array_agg(t ORDER BY i) FILTER (WHERE t = ANY($2) AND to_regclass(t) IS NOT NULL
			AND NOT has_table_privilege(to_regclass(t), 'SELECT')), '{}')
		FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i)`, all, tables).
		Scan(&database, &role, &searchPath, &missing, &unreadable); err != nil {
		return fmt.Errorf("check the tables %s reads: %w", flag, err)
	}
	if len(missing) > 0 && slices.Contains(coreTables, missing[0]) {
		return missingTables(ctx, q, flag, database, role, searchPath, missing)
	}
	if len(missing) > 0 {
		return fmt.Errorf("no table %s on the search_path (%s) of database %s: point %s at Cuebot's own database",
			strings.Join(missing, ", "), searchPath, database, flag)
	}
	if len(unreadable) > 0 {
		ts := strings.Join(unreadable, ", ")
		return fmt.Errorf("role %s may not read %s in database %s (permission denied): GRANT SELECT ON %s TO %s, "+
			"or give %s a role that may", role, ts, database, ts, role, flag)
	}
	return nil
}
