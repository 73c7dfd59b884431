package dispatch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/match"
)

// filmFarm is twoShowFarm loaded, a context for the test and film's 8
// placements, first fit.
func filmFarm(t *testing.T) (*booktest.Seeded, context.Context, []match.Placement) {
	t.Helper()
	db := booktest.LoadFarm(t, twoShowFarm())
	ctx := ctxFor(t, time.Minute)
	film := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool).Tagged("film"), nil)
	if len(film) != 8 {
		t.Fatalf("%d film placements, want 8", len(film))
	}
	return db, ctx, film
}

// bookResult is what one Book call returned.
type bookResult struct {
	res BatchResult
	err error
}

// bookBehind books each of batches (cluster i+2 for batch i) while a first
// batch of cluster 1 holds its rows, waits until they all wait in the gate,
// then lets the first commit; it returns the first's result and theirs.
func bookBehind(t *testing.T, b *testBooker, first []match.Placement, batches ...[]match.Placement) (bookResult,
	[]bookResult) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	holding, release := holdFirstWrite(b)
	firstDone := make(chan bookResult, 1)
	go func() {
		res, err := b.Book(ctx, Cluster{ID: 1}, first)
		firstDone <- bookResult{res, err}
	}()
	<-holding
	done := make([]chan bookResult, len(batches))
	for i, ps := range batches {
		done[i] = make(chan bookResult, 1)
		go func() {
			res, err := b.Book(ctx, Cluster{ID: int32(i + 2)}, ps)
			done[i] <- bookResult{res, err}
		}()
		// In order: the gate books waiting batches in arrival order.
		waitFor(t, fmt.Sprintf("batch %d waiting", i+2), func() bool { return b.gate.waiting() == i+1 })
	}
	close(release)
	out := make([]bookResult, len(batches))
	for i := range done {
		out[i] = <-done[i]
	}
	return <-firstDone, out
}

// Batches that waited behind the same batch book together, in one
// transaction: each booking keeps its own cluster (in the result and in its
// outbox row), and the bookings of the two are one transaction's (one xid,
// the host cache's echo).
func TestBatchesThatWaitedBookTogether(t *testing.T) {
	t.Parallel()
	db, ctx, film := filmFarm(t)
	b := newTestBooker(db.Pool, BookerConfig{})
	first, behind := bookBehind(t, b, film[:2], film[2:5], film[5:])
	if first.err != nil || len(first.res.Booked) != 2 {
		t.Fatalf("first batch: %v; booked %d", first.err, len(first.res.Booked))
	}
	xids := map[uint32]bool{}
	for i, r := range behind {
		c := int32(i + 2)
		if r.err != nil || len(r.res.Booked) != 3 || len(r.res.Dropped) != 0 {
			t.Fatalf("cluster %d: %v; booked %d, dropped %+v", c, r.err, len(r.res.Booked), r.res.Dropped)
		}
		for _, bk := range r.res.Booked {
			if bk.ClusterID != c {
				t.Errorf("cluster %d's booking of %s says cluster %d", c, bk.Frame.ID, bk.ClusterID)
			}
			xids[bk.Xid] = true
		}
	}
	if len(xids) != 1 || xids[first.res.Booked[0].Xid] {
		t.Errorf("the waiting batches were booked in transactions %v (the first in %d), want one of their own",
			xids, first.res.Booked[0].Xid)
	}
	rows, err := db.Pool.Query(ctx, `SELECT cluster_id, count(*) FROM cuesched.launch_outbox GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]int, error) {
		var c [2]int
		return c, r.Scan(&c[0], &c[1])
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int{{1, 2}, {2, 3}, {3, 3}}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("outbox rows by cluster: %v, want %v", counts, want)
	}
	if n := histCount(t, b, "cuesched_dispatch_batch_size"); n != 2 {
		t.Errorf("%v booking transactions, want 2", n)
	}
	audittest.Clean(t, db.Pool)
}

// In a transaction of several clusters' batches, a cluster fenced (owned
// elsewhere now) or busy (another transaction books it) fails only its own
// batch: the others book.
func TestBatchesTogetherFencedOrBusyAlone(t *testing.T) {
	t.Parallel()
	db, ctx, film := filmFarm(t)
	b := newTestBooker(db.Pool, BookerConfig{Fence: fenceRefusing{3}})
	// Cluster 4 is booked by another transaction meanwhile.
	other, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	if _, err := other.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 4)`, cluster.BookingLock); err != nil {
		t.Fatal(err)
	}
	first, behind := bookBehind(t, b, film[:2], film[2:4], film[4:6], film[6:])
	if first.err != nil || len(first.res.Booked) != 2 {
		t.Fatalf("first batch: %v; booked %d", first.err, len(first.res.Booked))
	}
	ok, fenced, busy := behind[0], behind[1], behind[2]
	if ok.err != nil || len(ok.res.Booked) != 2 {
		t.Errorf("cluster 2: %v; booked %d, want 2", ok.err, len(ok.res.Booked))
	}
	if !errors.Is(fenced.err, ErrFenced) || len(fenced.res.Deferred) != 2 || len(fenced.res.Booked) != 0 {
		t.Errorf("cluster 3 (fenced): %v; booked %d, deferred %d; want ErrFenced, 2 deferred", fenced.err,
			len(fenced.res.Booked), len(fenced.res.Deferred))
	}
	if busy.err != nil || !busy.res.Busy || len(busy.res.Deferred) != 2 || len(busy.res.Booked) != 0 {
		t.Errorf("cluster 4 (busy): %v; busy %v, booked %d, deferred %d; want busy, 2 deferred", busy.err,
			busy.res.Busy, len(busy.res.Booked), len(busy.res.Deferred))
	}
	if err := other.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	audittest.Clean(t, db.Pool)
}

// A batch let into another's transaction whose cluster is left before that
// transaction begins is not booked: it comes back untried.
func TestBatchOfALeftClusterNotBooked(t *testing.T) {
	t.Parallel()
	db, ctx, film := filmFarm(t)
	b := newTestBooker(db.Pool, BookerConfig{})
	left := make(chan struct{})
	close(left)
	m := &member{c: Cluster{ID: 2, Leaving: left}, ps: film[:4]}
	tk := b.gate.arrive(&member{c: Cluster{ID: 1}, ps: film[4:]}, batchRows(film[4:]))
	tk.group = []*ticket{{m: m, ready: make(chan struct{}), done: make(chan struct{}), began: true, lead: tk}}
	b.runGroup(ctx, tk)
	if !m.out.left || len(m.out.booked) != 0 {
		t.Errorf("the left cluster's batch: %+v, want left, nothing booked", m.out)
	}
	if n := len(tk.m.out.booked); n != 4 {
		t.Errorf("the leader's batch: %d booked, want 4", n)
	}
	audittest.Clean(t, db.Pool)
}

// fenceRefusing fails the fence of one cluster and passes the others'.
type fenceRefusing struct{ id int32 }

func (f fenceRefusing) Queue(b *pgx.Batch, clusterID int32) {
	b.Queue(`SELECT $1::int4`, clusterID).QueryRow(func(r pgx.Row) error {
		var id int32
		if err := r.Scan(&id); err != nil {
			return err
		}
		if id == f.id {
			return fmt.Errorf("cluster %d: %w", id, ErrFenced)
		}
		return nil
	})
}

// histCount is how many observations b's histogram name holds.
func histCount(t *testing.T, b *testBooker, name string) uint64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
