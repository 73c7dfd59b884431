package dispatch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
)

// tripCounter counts what a pool's connections send: batches, and
// statements sent alone. Each is one round trip.
type tripCounter struct {
	mu               sync.Mutex
	batches, singles int
	sql              []string
}

func (c *tripCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.singles++
	c.sql = append(c.sql, d.SQL)
	return ctx
}

func (c *tripCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *tripCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches++
	return ctx
}

func (c *tripCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *tripCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (c *tripCounter) counts() (batches, singles int, sql []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.batches, c.singles, c.sql
}

// A booking transaction is three round trips: the begin with its row locks
// and re-check reads, the writes, and the commit with its position. Each
// round trip more is a wait for a core that the stream's decoding and the
// matching also want (BENCHMARKS.md, "End to end against the write floor").
func TestBookThreeRoundTrips(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200))
	ctx := ctxFor(t, time.Minute)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	cfg, err := pgxpool.ParseConfig(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	trips := &tripCounter{}
	cfg.ConnConfig.Tracer = trips
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b := newTestBooker(pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != len(ps) || res.LSN == 0 {
		t.Fatalf("booked %d of %d, position %v", len(res.Booked), len(ps), res.LSN)
	}
	if batches, singles, sql := trips.counts(); batches != 3 || singles != 0 {
		t.Errorf("a booking sent %d batches and %d statements alone (%q); want 3 batches", batches, singles, sql)
	}
	audittest.Clean(t, db.Pool)
}

// The position a booking returns is at or past its commit record, read in
// the commit's round trip: the host cache holds the booked capacity until
// the stream has passed it, and a position before the commit would let the
// capacity go before the stream carried the booking. pg_walinspect finds the
// commit record of the booking's transaction.
func TestBookPositionAfterItsCommit(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200))
	ctx := ctxFor(t, time.Minute)
	if _, err := db.Pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect`); err != nil {
		t.Fatal(err)
	}
	var from string
	if err := db.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&from); err != nil {
		t.Fatal(err)
	}
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil || len(res.Booked) != len(ps) {
		t.Fatalf("booked %d of %d: %v", len(res.Booked), len(ps), err)
	}
	var commitEnd string
	if err := db.Pool.QueryRow(ctx, `
		SELECT end_lsn::text FROM pg_get_wal_records_info($1::pg_lsn, pg_current_wal_lsn())
		 WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid = $2::xid`,
		from, res.Booked[0].Xid).Scan(&commitEnd); err != nil {
		t.Fatalf("the booking's commit record (xid %d): %v", res.Booked[0].Xid, err)
	}
	end, err := pglogrepl.ParseLSN(commitEnd)
	if err != nil {
		t.Fatal(err)
	}
	if res.LSN < end {
		t.Errorf("booking position %v, before its commit record's end %v", res.LSN, end)
	}
	audittest.Clean(t, db.Pool)
}
