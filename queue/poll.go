package queue

import (
	"context"
	"time"
)

// Poll keeps the queue fresh without notifications, by rebuilding it from
// the same one query every interval (config PollEvery) until ctx ends; it
// returns nil then. It is the fallback for deployments that reach the
// database only through a transaction-mode pooler, where LISTEN cannot work
// (give such a pool a QueryExecMode that does not cache prepared
// statements), and the baseline the event feed is measured against. Every
// poll wakes every cluster with work, as a polling scheduler retries it all.
// Run the queue's Run beside it, for Requeue and start-after times.
func (q *Queue) Poll(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := q.Resync(ctx); err != nil && ctx.Err() == nil {
			q.log.Warn("poll for pending layers failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
