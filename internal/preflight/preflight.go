// Package preflight checks, before cuesched starts work, that the database
// is one it can work with, and says in one line what to do when it is not.
package preflight

import (
	"context"
	"fmt"

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

// CuebotSchema refuses a Cuebot schema older than V47.
func CuebotSchema(ctx context.Context, q Querier) error {
	for _, r := range required {
		var found bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2)`, r.table, r.column).
			Scan(&found); err != nil {
			return fmt.Errorf("check Cuebot schema: %w", err)
		}
		if !found {
			return fmt.Errorf("Cuebot schema too old: %s.%s is missing; apply Cuebot migration %s or newer (cuesched needs V47)",
				r.table, r.column, r.migration)
		}
	}
	return nil
}
