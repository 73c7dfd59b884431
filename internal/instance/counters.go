package instance

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/counters"
)

// newCounterWriter is the writer that brings the counters of managed shows
// back to SUM(proc), for the clusters this instance owns (Writer.SetOwns,
// once the loop is built), and the replica callback that feeds it; the callback is nil when Cuebot
// lowers the counters itself (setting "cuebot"), and the writer then is not
// run.
func newCounterWriter(setting string, pool *pgxpool.Pool, log *slog.Logger,
	reg prometheus.Registerer) (*counters.Writer, func(cache.CounterChanges)) {
	w := counters.NewWriter(counters.WriterConfig{Pool: pool, Logger: log, Registerer: reg})
	if setting == "cuebot" {
		return w, nil
	}
	return w, func(c cache.CounterChanges) { w.Changed(counterChanges(c)) }
}

// counterChanges is c as the writer takes it.
func counterChanges(c cache.CounterChanges) counters.Changes {
	out := counters.Changes{Shows: c.Shows, Polled: c.Polled}
	for _, r := range c.Released {
		out.Released = append(out.Released, counters.Released{Proc: r.Proc, Host: r.Host, Rows: counters.Proc(r.Rows)})
	}
	for _, m := range c.Moved {
		out.Moved = append(out.Moved, counters.Moved(m))
	}
	for _, p := range c.Capped {
		out.Capped = append(out.Capped, counters.Proc(p))
	}
	return out
}
