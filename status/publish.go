// Package status is what `cuesched status` shows: a Publisher, run inside
// every instance, that writes to the database why the layers of the clusters
// it owns still wait and how far its host cache lags the server, and Read,
// which builds the whole picture (instances, clusters and their owners,
// pending layers and waiting frames per cluster, the published reasons) from
// the database alone, so it needs no connection to any instance.
//
// Publishing keeps to the idle budget (DESIGN.md contract 3): a round runs
// every few seconds in memory and writes one statement only when what it
// would write changed; an idle instance with nothing waiting writes nothing.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/bits"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// Owned is a cluster this instance owns.
type Owned struct {
	ID  int32 // cuesched.cluster.id
	Key cluster.Key
}

// Replication is where this instance's host cache stands.
type Replication struct {
	Applied  cdc.LSN // every transaction committed before it has been applied
	LagBytes int64   // WAL between the server's last reported position and Applied
}

// Source is what a Publisher reads, as functions so tests need no running
// instance. Every function must be safe to call from the publisher's
// goroutine and return quickly.
type Source struct {
	// Instance returns this instance's registration id (0 while it is not
	// registered: nothing is published) and the clusters it owns.
	Instance func() (id int32, owned []Owned)
	// Waits returns why the layers of an owned cluster waited after its last
	// round (scheduler.Scheduler.Waits).
	Waits func(cluster.Key) []match.Wait
	// Replication, when set, returns the host cache's position.
	Replication func() Replication
	// Refused, when set, returns the counter rows Cuebot's guard refuses
	// this instance now (counters.Writer.Refused).
	Refused func() []Refused
}

// Refused is a counter row Cuebot's guard refuses to set to its sum, as
// stored in cuesched.instance.counters_refused: it is held at its cap until
// its rows change.
type Refused struct {
	Table string `json:"table"`
	Key   string `json:"key"` // the row's primary key
	Err   string `json:"error"`
}

// Execer runs one statement; *pgxpool.Pool is one.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// PublisherConfig is what a Publisher needs.
type PublisherConfig struct {
	DB     Execer
	Source Source
	// Every is how often a round compares; default 2 s. It bounds how often
	// a busy instance writes.
	Every time.Duration
	// MaxWaits bounds the layers published per cluster (the first ones in
	// the scheduler's order, highest priority first); default 50.
	MaxWaits int
	// Timeout bounds one write; default 10 s.
	Timeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Tick, when set, replaces the Every timer: tests drive rounds with it.
	Tick <-chan time.Time
	// Observe, when set, receives the outcome of every round (tests wait on
	// it). It runs on the publisher's goroutine.
	Observe func(Round)
}

// Round is what one round did.
type Round struct {
	Wrote   bool  // one statement was run
	Written int   // clusters whose reasons were written
	Removed int   // clusters whose reasons were removed
	Err     error // the write failed; the next round tries again
}

// Wait is one layer's published reason, as stored in cuesched.cluster_wait.
type Wait struct {
	Layer   string `json:"layer"` // pk_layer
	Name    string `json:"name"`
	Job     string `json:"job"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
	Waiting int64  `json:"waiting"` // layer_stat.int_waiting_count when the layer was read
}

// published is one cluster's row as last written.
type published struct {
	waits string // JSON array of Wait
	more  int
}

// Publisher writes this instance's status when it changed. Run it; cancel
// its context to stop it.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger

	// Only Run's goroutine touches these: what the database holds.
	instance int32
	lagClass int
	clusters map[int32]published
	refused  string // JSON array of Refused; "" for none
}

// NewPublisher returns a publisher; Run starts it.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Every <= 0 {
		cfg.Every = 2 * time.Second
	}
	if cfg.MaxWaits <= 0 {
		cfg.MaxWaits = 50
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Publisher{cfg: cfg, log: cfg.Logger.With("component", "status"), clusters: map[int32]published{}}
}

// Run publishes until ctx ends, then returns nil.
func (p *Publisher) Run(ctx context.Context) error {
	tick := p.cfg.Tick
	if tick == nil {
		t := time.NewTicker(p.cfg.Every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			r := p.round(ctx)
			if r.Err != nil && ctx.Err() == nil {
				p.log.Warn("publish status", "err", r.Err)
			}
			if p.cfg.Observe != nil {
				p.cfg.Observe(r)
			}
		}
	}
}

// lagClassOf buckets a lag so that its noise does not count as a change:
// under 64 KiB is none, above that each doubling is a class.
func lagClassOf(b int64) int {
	if b < 64<<10 {
		return 0
	}
	return bits.Len64(uint64(b))
}

// publishSQL replaces this instance's status in one statement: its
// replication position and refused counter rows ($8), its reasons for the clusters in $5 (skipping a
// cluster deleted meanwhile), and no reasons for its clusters not in $4.
const publishSQL = `WITH inst AS (
    UPDATE cuesched.instance SET applied_lsn = $2::pg_lsn, lag_bytes = $3, reported_at = now(),
           counters_refused = nullif($8, '')::jsonb
     WHERE id = $1 RETURNING id
), gone AS (
    DELETE FROM cuesched.cluster_wait w WHERE w.instance = $1 AND w.cluster <> ALL($4::int[])
)
INSERT INTO cuesched.cluster_wait (cluster, instance, waits, more, reported_at)
SELECT t.c, inst.id, t.w::jsonb, t.m, now()
  FROM unnest($5::int[], $6::text[], $7::int[]) AS t(c, w, m)
  JOIN cuesched.cluster c ON c.id = t.c
 CROSS JOIN inst
ON CONFLICT (cluster) DO UPDATE
   SET instance = EXCLUDED.instance, waits = EXCLUDED.waits, more = EXCLUDED.more, reported_at = EXCLUDED.reported_at`

// round compares what the instance would publish with what it published,
// and writes the difference in one statement when there is any.
func (p *Publisher) round(ctx context.Context) Round {
	src := p.cfg.Source
	id, owned := src.Instance()
	if id == 0 {
		return Round{}
	}
	var rep Replication
	if src.Replication != nil {
		rep = src.Replication()
	}
	cur := make(map[int32]published, len(owned))
	for _, o := range owned {
		if w, ok := p.encode(src.Waits(o.Key)); ok {
			cur[o.ID] = w
		}
	}
	fresh := id != p.instance // a new registration has published nothing
	class := lagClassOf(rep.LagBytes)
	var ids, mores []int32
	var docs []string
	for cid, w := range cur {
		if old, ok := p.clusters[cid]; fresh || !ok || old != w {
			ids, docs, mores = append(ids, cid), append(docs, w.waits), append(mores, int32(w.more))
		}
	}
	removed := 0
	for cid := range p.clusters {
		if _, ok := cur[cid]; !ok && !fresh {
			removed++
		}
	}
	refused := encodeRefused(src.Refused)
	if !fresh && class == p.lagClass && refused == p.refused && len(ids) == 0 && removed == 0 {
		return Round{}
	}
	keep := make([]int32, 0, len(cur))
	for cid := range cur {
		keep = append(keep, cid)
	}
	var applied, lag any
	if src.Replication != nil {
		lag = rep.LagBytes
		if rep.Applied != 0 {
			applied = rep.Applied.String()
		}
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if _, err := p.cfg.DB.Exec(wctx, publishSQL, id, applied, lag, keep, ids, docs, mores, refused); err != nil {
		return Round{Err: fmt.Errorf("instance %d: %w", id, err)}
	}
	p.instance, p.lagClass, p.clusters, p.refused = id, class, cur, refused
	return Round{Wrote: true, Written: len(ids), Removed: removed}
}

// encodeRefused is the JSON of the refused counter rows, "" for none.
func encodeRefused(src func() []Refused) string {
	if src == nil {
		return ""
	}
	rs := src()
	if len(rs) == 0 {
		return ""
	}
	raw, err := json.Marshal(rs)
	if err != nil {
		// Only strings: cannot fail.
		return ""
	}
	return string(raw)
}

// encode turns a cluster's waits into the JSON it publishes; false when
// nothing waits.
func (p *Publisher) encode(waits []match.Wait) (published, bool) {
	out := make([]Wait, 0, min(len(waits), p.cfg.MaxWaits))
	more := 0
	for _, w := range waits {
		if w.Layer == nil {
			continue
		}
		if len(out) == p.cfg.MaxWaits {
			more++
			continue
		}
		out = append(out, Wait{Layer: w.Layer.ID, Name: w.Layer.Name, Job: w.Layer.JobName,
			Reason: string(w.Reason), Detail: w.Detail, Waiting: w.Layer.Waiting})
	}
	if len(out) == 0 {
		return published{}, false
	}
	raw, err := json.Marshal(out)
	if err != nil {
		// Only strings and integers: cannot fail.
		return published{}, false
	}
	return published{waits: string(raw), more: more}, true
}
