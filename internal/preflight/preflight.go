// Package preflight checks, before cuesched starts work, that the database
// is one it can work with, and says in one line what to do when it is not.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Querier is a connection, pool or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// required lists the newest columns cuesched relies on with the Cuebot
// migration that added each, newest first, so the message names the latest
// migration missing.
var required = []struct{ table, column, migration string }{
	{"layer", "ts_start_after", "V47 (Add_layer_start_after)"},
	{"show", "b_scheduler_managed", "V45 (show_scheduler_managed)"},
	{"layer_stat", "ts_started", "V43 (Add_layer_stat_ts_columns)"},
	{"frame", "ts_eligible", "V41 (Add_ts_eligible_columns)"},
	{"layer", "ts_eligible", "V41 (Add_ts_eligible_columns)"},
	{"job", "ts_eligible", "V41 (Add_ts_eligible_columns)"},
}

// coreTables are tables every Cuebot schema has had since its first
// migration: none of them on the search_path means the connection is not on
// a Cuebot schema at all.
var coreTables = []string{"show", "host", "frame"}

// CuebotSchema refuses a database that is not on Cuebot's schema (no Cuebot
// tables, or them in a schema the connection does not search or may not
// use), a Cuebot schema older than V47, and a role that may not read
// Cuebot's tables, each with its own line. It reads only the catalog, never
// the tables, so a missing privilege is not mistaken for a missing table or
// column.
func CuebotSchema(ctx context.Context, q Querier) error {
	var database, role, searchPath string
	if err := q.QueryRow(ctx, `SELECT current_database(), current_user, current_setting('search_path')`).
		Scan(&database, &role, &searchPath); err != nil {
		return fmt.Errorf("check Cuebot schema: %w", err)
	}
	tables := slices.Clone(coreTables)
	for _, r := range required {
		if !slices.Contains(tables, r.table) {
			tables = append(tables, r.table)
		}
	}
	// to_regclass resolves a name along the search_path (skipping schemas
	// the role may not use) without reading the table.
	var missing, unreadable []string
	if err := q.QueryRow(ctx, `SELECT
		coalesce(array_agg(t ORDER BY i) FILTER (WHERE to_regclass(t) IS NULL), '{}'),
		coalesce(array_agg(t ORDER BY i) FILTER (WHERE to_regclass(t) IS NOT NULL
			AND NOT has_table_privilege(to_regclass(t), 'SELECT')), '{}')
		FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i)`, tables).Scan(&missing, &unreadable); err != nil {
		return fmt.Errorf("check Cuebot schema: %w", err)
	}
	if len(missing) > 0 {
		return missingTables(ctx, q, "--db", database, role, searchPath, missing)
	}
	for _, r := range required {
		var found bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute
			WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped)`, r.table, r.column).
			Scan(&found); err != nil {
			return fmt.Errorf("check Cuebot schema: %w", err)
		}
		if !found {
			//lint:ignore ST1005 Cuebot is a proper noun, the exception the check allows but cannot see
			return fmt.Errorf("Cuebot schema too old: %s.%s is missing; apply Cuebot migration %s or newer (cuesched needs V47)",
				r.table, r.column, r.migration)
		}
	}
	if len(unreadable) > 0 {
		return fmt.Errorf("role %s may not read Cuebot's tables %s in database %s (permission denied, the schema itself is fine): "+
			"GRANT SELECT (and the privileges cuesched's deployment needs) on them to %s, or connect as Cuebot's role",
			role, strings.Join(unreadable, ", "), database, role)
	}
	return nil
}

// missingTables says why Cuebot's tables are not on the search_path (flag
// names the setting that gave the database): they
// are in a schema the role may not use, in one it does not search, nowhere
// in this database, or only some of them are there.
func missingTables(ctx context.Context, q Querier, flag, database, role, searchPath string, missing []string) error {
	if len(missing) < len(coreTables) || !slices.Equal(missing[:len(coreTables)], coreTables) {
		//lint:ignore ST1005 Cuebot is a proper noun, the exception the check allows but cannot see
		return fmt.Errorf("Cuebot schema incomplete in database %s: no table %s on the search_path (%s); "+
			"point %s at Cuebot's own database, at migration V47 or newer", database, strings.Join(missing, ", "), searchPath, flag)
	}
	var schema string
	var usage bool
	err := q.QueryRow(ctx, `SELECT n.nspname, has_schema_privilege(n.oid, 'USAGE')
		FROM pg_catalog.pg_namespace n
		WHERE (SELECT count(*) FROM pg_catalog.pg_class c
			WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p') AND c.relname = ANY($1)) = cardinality($1)
		ORDER BY n.nspname = 'public' DESC, n.nspname LIMIT 1`, coreTables).Scan(&schema, &usage)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("no Cuebot schema in database %s: none of the tables %s exists in any schema, so this is not a Cuebot database; "+
			"point %s at the database Cuebot uses", database, strings.Join(coreTables, ", "), flag)
	case err != nil:
		return fmt.Errorf("check Cuebot schema: %w", err)
	case !usage:
		//lint:ignore ST1005 Cuebot is a proper noun, the exception the check allows but cannot see
		return fmt.Errorf("Cuebot's tables are in schema %s of database %s, on which role %s lacks USAGE (permission denied): "+
			"GRANT USAGE ON SCHEMA %s TO %s, or connect as Cuebot's role", schema, database, role, schema, role)
	default:
		//lint:ignore ST1005 Cuebot is a proper noun, the exception the check allows but cannot see
		return fmt.Errorf("Cuebot's tables are in schema %s of database %s, which is not on the search_path (%s): "+
			"ALTER ROLE %s SET search_path = %s, or add options=-csearch_path=%s to %s", schema, database, searchPath, role, schema, schema, flag)
	}
}
