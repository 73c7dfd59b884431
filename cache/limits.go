package cache

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/wait"
)

// LimitsChannel is the channel migrations/0003's triggers notify when
// limit_record or layer_limit change. Those tables have no primary key and
// cannot be published (DESIGN.md), so they are read by query: at start,
// after every reconnect of the notification feed, and on each notification.
//
// Wiring with cdc.Listener:
//
//	l.Handle(cache.LimitsChannel, func(string) { r.LimitsChanged() })
//	l.OnConnect(r.ReloadLimits)
const LimitsChannel = "cuesched_limits"

// rowsQuerier is a pool, connection or transaction.
type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readLimits reads every limit record and layer link.
func readLimits(ctx context.Context, q rowsQuerier) (*limitSet, error) {
	ls := &limitSet{max: map[string]int64{}, ofLayer: map[string][]string{}}
	rows, err := q.Query(ctx, `SELECT pk_limit_record, int_max_value FROM limit_record`)
	if err != nil {
		return nil, fmt.Errorf("read limit records: %w", err)
	}
	var id string
	var max *int64
	_, err = pgx.ForEachRow(rows, []any{&id, &max}, func() error {
		// A NULL max lets nothing run: Cuebot's booking compares the
		// running count with it, which fails, and the re-check reads it
		// as 0.
		ls.max[id] = 0
		if max != nil {
			ls.max[id] = *max
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read limit records: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT DISTINCT pk_layer, pk_limit_record FROM layer_limit ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read layer limits: %w", err)
	}
	var layer, limit string
	_, err = pgx.ForEachRow(rows, []any{&layer, &limit}, func() error {
		ls.ofLayer[layer] = append(ls.ofLayer[layer], limit)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read layer limits: %w", err)
	}
	return ls, nil
}

// ReloadLimits reads the limits now and installs them; the running count of
// each limit is recounted from the replicated procs of its layers. It is
// the resync to run after every (re)connect of the notification feed.
func (r *Replica) ReloadLimits(ctx context.Context) error {
	ls, err := readLimits(ctx, r.cfg.Pool)
	if err != nil {
		r.metrics.LimitReloads.WithLabelValues("error").Inc()
		return err
	}
	r.usage.mu.Lock()
	r.usage.st.setLimits(ls)
	r.usage.mu.Unlock()
	r.metrics.LimitReloads.WithLabelValues("ok").Inc()
	r.observe(ReplicaEvent{Kind: EventLimits})
	return nil
}

// LimitsChanged asks for a reload of the limits (a notification on
// LimitsChannel). It never blocks; a burst of calls costs one or two reloads.
func (r *Replica) LimitsChanged() {
	select {
	case r.limitsKick <- struct{}{}:
	default:
	}
}

// runLimits reloads the limits when asked, retrying with backoff.
func (r *Replica) runLimits(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.limitsKick:
		}
		for delay := r.cfg.MinBackoff; ; delay = min(delay*2, r.cfg.MaxBackoff) {
			qctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			err := r.ReloadLimits(qctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			r.log.Warn("reload limits", "err", err, "retry_in", delay)
			r.observe(ReplicaEvent{Kind: EventLimits, Err: err})
			if !wait.Sleep(ctx, delay) {
				return
			}
		}
	}
}
