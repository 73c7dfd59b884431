package dispatch

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/match"
)

// writeCounter counts the writes of a connection: with a warm connection
// (its statements prepared), each request pgx sends is one write, and one
// round trip.
type writeCounter struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A booking transaction is three round trips: the begin with its row locks
// and re-check reads, the writes, and the commit with its position. Each
// round trip more is a wait for a core that the stream's decoding and the
// matching also want (BENCHMARKS.md, "End to end against the write floor").
func TestBookThreeRoundTrips(t *testing.T) {
	t.Parallel()
	db, ctx, ps := placedFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200), 6)
	cfg, err := pgxpool.ParseConfig(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	cfg.MaxConns = 1 // the first booking prepares the statements the second uses
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return writeCounter{Conn: c, writes: &writes}, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b := newTestBooker(pool, BookerConfig{})
	for i, half := range [][]match.Placement{ps[:3], ps[3:]} {
		writes.Store(0)
		res, err := b.Book(ctx, testCluster, half)
		if err != nil || len(res.Booked) != len(half) || res.LSN == 0 {
			t.Fatalf("booking %d: booked %d of %d, position %v: %v", i+1, len(res.Booked), len(half), res.LSN, err)
		}
	}
	if n := writes.Load(); n != 3 {
		t.Errorf("a booking on a warm connection took %d round trips, want 3", n)
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
	db, ctx, ps := placedFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200), 6)
	if _, err := db.Pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect`); err != nil {
		t.Fatal(err)
	}
	var from string
	if err := db.Pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&from); err != nil {
		t.Fatal(err)
	}
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
