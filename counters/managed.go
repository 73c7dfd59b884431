package counters

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RecomputeManaged recomputes every counter row of every managed show, in
// a transaction of its own: what an instance does when it starts or takes
// clusters over.
func RecomputeManaged(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT pk_show FROM show WHERE b_scheduler_managed ORDER BY pk_show`)
		if err != nil {
			return fmt.Errorf("read managed shows: %w", err)
		}
		shows, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("read managed shows: %w", err)
		}
		// A row the guard refuses is held at its cap and reported by the
		// Writer's recompute after the replica's snapshot: nothing to add here.
		_, err = RecomputeShows(ctx, tx, shows)
		return err
	})
}
