package cache

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// LoadSnapshot fills the replica from tx alone, without a replication
// stream: the limits and every replicated table, read by the same code as a
// stream's snapshot. With tx REPEATABLE READ the hosts, usage, caps and
// limits are one consistent picture, for a read-only look at the farm
// (cuesched explain). Do not Run a replica loaded this way.
func (r *Replica) LoadSnapshot(ctx context.Context, tx pgx.Tx) error {
	ls, err := readLimits(ctx, tx)
	if err != nil {
		return err
	}
	r.usage.mu.Lock()
	r.usage.st.setLimits(ls)
	r.usage.mu.Unlock()
	return r.Reset(ctx, tx, 0)
}
