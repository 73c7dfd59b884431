package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/queue"
)

// Report is the state of a deployment as the database holds it.
type Report struct {
	At        time.Time  `json:"at"`          // the database's clock
	WAL       string     `json:"wal"`         // pg_current_wal_lsn()
	Instances []Instance `json:"instances"`   // by id
	Clusters  []Cluster  `json:"clusters"`    // by key
	Unowned   int        `json:"unowned"`     // clusters no live instance owns
	Layers    int        `json:"layers"`      // pending layers (a layer of several clusters counts once)
	Frames    int64      `json:"frames"`      // waiting frames of those layers
	Buckets   string     `json:"tag_buckets"` // the deployment's tag bucket setting
	// Reserved is how many hosts are reserved, for how many layers
	// (cuesched.reservation: reservations with backfill).
	Reserved       int `json:"reserved_hosts"`
	ReservedLayers int `json:"reserving_layers"`
}

// Instance is one registered instance.
type Instance struct {
	ID         int32      `json:"id"`
	Name       string     `json:"name"`
	Host       string     `json:"host"`
	PID        int32      `json:"pid"`
	Started    time.Time  `json:"started"`
	LeaseUntil time.Time  `json:"lease_until"`
	Live       bool       `json:"live"`     // its coordination session holds its liveness lock
	Clusters   int        `json:"clusters"` // clusters it owns
	Applied    string     `json:"applied_lsn,omitempty"`
	LagBytes   *int64     `json:"lag_bytes,omitempty"`   // as it reported
	ReportedAt *time.Time `json:"reported_at,omitempty"` // nil: it never reported
	// Refused are the counter rows Cuebot's guard refuses it, as it last
	// reported.
	Refused []Refused `json:"counters_refused,omitempty"`
}

// Cluster is one cluster with its pending work.
type Cluster struct {
	ID          int32      `json:"id,omitempty"` // 0: no cuesched.cluster row (no host carries its tags)
	Key         string     `json:"key"`
	Kind        string     `json:"kind"` // "alloc" or "tags"
	Facility    string     `json:"facility"`
	Alloc       string     `json:"alloc,omitempty"`     // allocation name, kind alloc
	AllocTag    string     `json:"alloc_tag,omitempty"` // kind alloc
	Bucket      int        `json:"bucket,omitempty"`    // kind tags
	Owner       int32      `json:"owner,omitempty"`     // instance id; 0: none
	OwnerName   string     `json:"owner_name,omitempty"`
	Epoch       int64      `json:"epoch"`
	HandingTo   *int32     `json:"handing_over_to,omitempty"` // a pending handover (0: to nobody)
	Unowned     bool       `json:"unowned"`                   // no live instance owns it
	Pending     int        `json:"pending_layers"`
	Waiting     int64      `json:"waiting_frames"`
	Layers      []Layer    `json:"layers,omitempty"`
	ReasonsBy   int32      `json:"reasons_by,omitempty"` // instance that published the reasons
	ReasonsAt   *time.Time `json:"reasons_at,omitempty"`
	ReasonsMore int        `json:"reasons_more,omitempty"` // waiting layers the publisher left out
	// Reserved is how many hosts its owner reserved, for how many layers.
	Reserved       int `json:"reserved_hosts,omitempty"`
	ReservedLayers int `json:"reserving_layers,omitempty"`
}

// Layer is one pending layer of a cluster.
type Layer struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Job        string     `json:"job"`
	Priority   int64      `json:"priority"`
	Waiting    int64      `json:"waiting_frames"`
	StartAfter *time.Time `json:"start_after,omitempty"`
	Reason     string     `json:"reason,omitempty"` // from the owner's last round; empty: none published
	Detail     string     `json:"detail,omitempty"`
}

func kindName(k cluster.Kind) string {
	if k == cluster.KindAlloc {
		return "alloc"
	}
	return "tags"
}

var instancesSQL = fmt.Sprintf(`SELECT i.id, i.name, i.host_name, i.pid, i.started_at, i.lease_until,
       i.id IN (SELECT l.objid::bigint FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.classid = %d AND l.objsubid = 2 AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())),
       coalesce(i.applied_lsn::text, ''), i.lag_bytes, i.reported_at, coalesce(i.counters_refused::text, '[]')
  FROM cuesched.instance i ORDER BY i.id`, cluster.LivenessLock)

const clustersSQL = `SELECT c.id, c.key, c.kind, c.facility, coalesce(c.alloc, ''), coalesce(c.alloc_tag, ''),
       coalesce(c.bucket, 0), coalesce(c.owner, 0), c.epoch, h.cluster IS NOT NULL, coalesce(h.receiver, 0),
       coalesce(w.instance, 0), coalesce(w.waits::text, '[]'), coalesce(w.more, 0), w.reported_at
  FROM cuesched.cluster c
  LEFT JOIN cuesched.handover h ON h.cluster = c.id
  LEFT JOIN cuesched.cluster_wait w ON w.cluster = c.id
 ORDER BY c.key`

const namesSQL = `SELECT 'f', pk_facility, str_name FROM facility
 UNION ALL SELECT 'a', pk_alloc, str_name FROM alloc`

// Read builds the report. Pending layers are grouped into clusters by the
// pending-layer queue itself (queue.Queue, read once), so they are counted
// exactly as the instances count them.
func Read(ctx context.Context, pool *pgxpool.Pool) (Report, error) {
	var r Report
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return r, fmt.Errorf("read status: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read only
	if err := tx.QueryRow(ctx, `SELECT now(), pg_current_wal_lsn()::text,
		coalesce((SELECT value FROM cuesched.setting WHERE name = 'tag_buckets'), '1')`).Scan(&r.At, &r.WAL, &r.Buckets); err != nil {
		return r, fmt.Errorf("read status: %w", err)
	}
	names, err := readNames(ctx, tx)
	if err != nil {
		return r, err
	}
	if r.Instances, err = readInstances(ctx, tx); err != nil {
		return r, err
	}
	waits := map[string]map[string]Wait{} // cluster key -> layer -> reason
	if r.Clusters, err = readClusters(ctx, tx, names, waits); err != nil {
		return r, err
	}
	if err := readReserved(ctx, tx, &r); err != nil {
		return r, err
	}
	if err := tx.Commit(ctx); err != nil {
		return r, fmt.Errorf("read status: %w", err)
	}

	q := queue.New(pool, slog.New(slog.DiscardHandler))
	if err := q.Resync(ctx); err != nil {
		return r, fmt.Errorf("read pending layers: %w", err)
	}
	byKey := map[string]int{}
	for i, c := range r.Clusters {
		byKey[c.Key] = i
	}
	seen := map[string]bool{}
	for _, k := range q.Clusters() {
		i, ok := byKey[k.String()]
		if !ok {
			// No cluster row (no host carries its tags, or no instance
			// has discovered it yet): nobody can own it, and it shows as
			// such.
			c := Cluster{Key: k.String(), Kind: kindName(k.Kind), Facility: names.facility(k.Facility),
				Alloc: names.alloc(k.Alloc), Bucket: k.Bucket}
			r.Clusters = append(r.Clusters, c)
			i = len(r.Clusters) - 1
		}
		c := &r.Clusters[i]
		for _, l := range q.Layers(k) {
			out := Layer{ID: l.ID, Name: l.Name, Job: l.JobName, Priority: l.Priority, Waiting: l.Waiting}
			if !l.StartAfter.IsZero() && l.StartAfter.After(r.At) {
				t := l.StartAfter
				out.StartAfter = &t
			}
			if w, ok := waits[c.Key][l.ID]; ok {
				out.Reason, out.Detail = w.Reason, w.Detail
			}
			c.Layers = append(c.Layers, out)
			c.Pending++
			c.Waiting += l.Waiting
			if !seen[l.ID] {
				seen[l.ID] = true
				r.Layers++
				r.Frames += l.Waiting
			}
		}
	}
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].Key < r.Clusters[j].Key })

	live := map[int32]int{}
	for i, in := range r.Instances {
		if in.Live {
			live[in.ID] = i
		}
	}
	for i := range r.Clusters {
		c := &r.Clusters[i]
		if j, ok := live[c.Owner]; ok {
			r.Instances[j].Clusters++
		} else {
			c.Unowned = true
			r.Unowned++
		}
		for _, in := range r.Instances {
			if in.ID == c.Owner {
				c.OwnerName = in.Name
			}
		}
	}
	return r, nil
}

// names maps facility and allocation keys to their names.
type names map[string]string

func (n names) facility(id string) string { return n.get("f", id) }
func (n names) alloc(id string) string    { return n.get("a", id) }
func (n names) get(kind, id string) string {
	if v, ok := n[kind+id]; ok {
		return v
	}
	return id
}

func readNames(ctx context.Context, tx pgx.Tx) (names, error) {
	rows, err := tx.Query(ctx, namesSQL)
	if err != nil {
		return nil, fmt.Errorf("read facility and allocation names: %w", err)
	}
	out := names{}
	var kind, id, name string
	_, err = pgx.ForEachRow(rows, []any{&kind, &id, &name}, func() error {
		out[kind+id] = name
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read facility and allocation names: %w", err)
	}
	return out, nil
}

func readInstances(ctx context.Context, tx pgx.Tx) ([]Instance, error) {
	rows, err := tx.Query(ctx, instancesSQL)
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	var out []Instance
	var in Instance
	var refused string
	_, err = pgx.ForEachRow(rows, []any{&in.ID, &in.Name, &in.Host, &in.PID, &in.Started, &in.LeaseUntil,
		&in.Live, &in.Applied, &in.LagBytes, &in.ReportedAt, &refused}, func() error {
		in.Refused = nil
		if err := json.Unmarshal([]byte(refused), &in.Refused); err != nil {
			return fmt.Errorf("instance %d: counters_refused is not an array of {table, key, error}: %w", in.ID, err)
		}
		out = append(out, in)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	return out, nil
}

func readClusters(ctx context.Context, tx pgx.Tx, n names, waits map[string]map[string]Wait) ([]Cluster, error) {
	rows, err := tx.Query(ctx, clustersSQL)
	if err != nil {
		return nil, fmt.Errorf("read clusters: %w", err)
	}
	var out []Cluster
	var (
		c                    Cluster
		kind                 int16
		facility, alloc, doc string
		handing              bool
		receiver             int32
		reportedAt           *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&c.ID, &c.Key, &kind, &facility, &alloc, &c.AllocTag, &c.Bucket,
		&c.Owner, &c.Epoch, &handing, &receiver, &c.ReasonsBy, &doc, &c.ReasonsMore, &reportedAt}, func() error {
		x := c
		x.Kind = kindName(cluster.Kind(kind))
		x.Facility, x.Alloc = n.facility(facility), ""
		if alloc != "" {
			x.Alloc = n.alloc(alloc)
		}
		if handing {
			to := receiver
			x.HandingTo = &to
		}
		x.ReasonsAt = reportedAt
		var ws []Wait
		if err := json.Unmarshal([]byte(doc), &ws); err != nil {
			// A bad row only loses its reasons (contract 5).
			slog.Warn("cluster_wait row is not a list of waits", "cluster", x.Key, "err", err)
		}
		m := map[string]Wait{}
		for _, w := range ws {
			m[w.Layer] = w
		}
		waits[x.Key] = m
		out = append(out, x)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read clusters: %w", err)
	}
	return out, nil
}

// readReserved counts the reservations, in all and per cluster.
func readReserved(ctx context.Context, tx pgx.Tx, r *Report) error {
	if err := tx.QueryRow(ctx, `SELECT count(*), count(DISTINCT layer_id) FROM cuesched.reservation`).
		Scan(&r.Reserved, &r.ReservedLayers); err != nil {
		return fmt.Errorf("read reservations: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT cluster_id, count(*), count(DISTINCT layer_id) FROM cuesched.reservation GROUP BY 1`)
	if err != nil {
		return fmt.Errorf("read reservations: %w", err)
	}
	byID := map[int32]*Cluster{}
	for i := range r.Clusters {
		byID[r.Clusters[i].ID] = &r.Clusters[i]
	}
	var id int32
	var hosts, layers int
	_, err = pgx.ForEachRow(rows, []any{&id, &hosts, &layers}, func() error {
		if c := byID[id]; c != nil {
			c.Reserved, c.ReservedLayers = hosts, layers
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read reservations: %w", err)
	}
	return nil
}
