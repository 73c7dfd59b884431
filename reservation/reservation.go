// Package reservation keeps reservations (match/reserve.go) in the database,
// in cuesched.reservation (migration 0014): the owner of the reserving
// layer's cluster writes its cluster's rows behind the booking fence, and
// every instance reads them all for its matching, as explain and status do.
// It also reads what planning them needs beyond the host cache: the frames
// running on hosts, with when each started and how long it is expected to
// run.
package reservation

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/match"
)

// Fence proves in a write's transaction that this instance still owns the
// cluster (ownership.Coordinator's, the bookings' fence).
type Fence interface {
	Queue(b *pgx.Batch, clusterID int32)
}

// Store reads and writes cuesched.reservation.
type Store struct {
	pool  *pgxpool.Pool
	fence Fence
}

// New returns a store over pool, writing behind fence.
func New(pool *pgxpool.Pool, fence Fence) *Store {
	return &Store{pool: pool, fence: fence}
}

const columns = `host_id, host_name, layer_id, layer_name, starts_at, created_at`

func scan(rows pgx.Rows) ([]match.Reservation, error) {
	defer rows.Close()
	var out []match.Reservation
	for rows.Next() {
		var r match.Reservation
		var start *time.Time
		if err := rows.Scan(&r.Host, &r.HostName, &r.Layer, &r.LayerName, &start, &r.Made); err != nil {
			return nil, err
		}
		if start != nil {
			r.Start = *start
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// All reads every reservation, of every cluster.
func (s *Store) All(ctx context.Context) ([]match.Reservation, error) {
	return All(ctx, s.pool)
}

// Querier is a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// All reads every reservation through q (explain reads them in its
// snapshot).
func All(ctx context.Context, q Querier) ([]match.Reservation, error) {
	rows, err := q.Query(ctx, `SELECT `+columns+` FROM cuesched.reservation ORDER BY host_id`)
	if err != nil {
		return nil, fmt.Errorf("read reservations: %w", err)
	}
	rs, err := scan(rows)
	if err != nil {
		return nil, fmt.Errorf("read reservations: %w", err)
	}
	return rs, nil
}

// Load reads a cluster's reservations, whoever wrote them: an owner taking
// the cluster over starts from them.
func (s *Store) Load(ctx context.Context, clusterID int32) ([]match.Reservation, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM cuesched.reservation WHERE cluster_id = $1 ORDER BY host_id`,
		clusterID)
	if err != nil {
		return nil, fmt.Errorf("read reservations of cluster %d: %w", clusterID, err)
	}
	rs, err := scan(rows)
	if err != nil {
		return nil, fmt.Errorf("read reservations of cluster %d: %w", clusterID, err)
	}
	return rs, nil
}

// Save makes rs the cluster's reservations, written by instance owner at
// the cluster's epoch with when each was made (created_at: Made, now when
// zero), in one transaction behind the fence: the cluster's
// other rows are deleted, and a host another cluster's row holds is left to
// it (the first reservation of a host stands). An error wrapping the
// fence's means another instance owns the cluster now: nothing was written.
func (s *Store) Save(ctx context.Context, clusterID, owner int32, epoch int64, rs []match.Reservation) error {
	n := len(rs)
	hosts, hostNames, layers, layerNames := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	starts, made := make([]*time.Time, n), make([]time.Time, n)
	for i, r := range rs {
		hosts[i], hostNames[i], layers[i], layerNames[i], made[i] = r.Host, r.HostName, r.Layer, r.LayerName, r.Made
		if made[i].IsZero() {
			made[i] = time.Now()
		}
		if !r.Start.IsZero() {
			st := r.Start
			starts[i] = &st
		}
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		if s.fence != nil {
			s.fence.Queue(b, clusterID)
		}
		b.Queue(`DELETE FROM cuesched.reservation WHERE cluster_id = $1 AND host_id <> ALL($2::text[])`, clusterID, hosts)
		b.Queue(`
INSERT INTO cuesched.reservation (host_id, host_name, layer_id, layer_name, starts_at, cluster_id, owner, epoch, created_at)
SELECT h, hn, l, ln, st, $6, $7, $8, m
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $9::timestamptz[]) AS r(h, hn, l, ln, st, m)
    ON CONFLICT (host_id) DO UPDATE
   SET host_name = EXCLUDED.host_name, layer_id = EXCLUDED.layer_id, layer_name = EXCLUDED.layer_name,
       starts_at = EXCLUDED.starts_at, owner = EXCLUDED.owner, epoch = EXCLUDED.epoch, created_at = EXCLUDED.created_at
 WHERE reservation.cluster_id = EXCLUDED.cluster_id`, hosts, hostNames, layers, layerNames, starts, clusterID, owner, epoch,
			made)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write %d reservations of cluster %d: %w", n, clusterID, err)
		}
		return nil
	})
}
