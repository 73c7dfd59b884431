package dispatch

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
)

// Ours keeps the last n ids it was given, and a nil Ours keeps none.
func TestOursKeepsTheLatest(t *testing.T) {
	t.Parallel()
	o := NewOurs(2)
	for _, xid := range []uint32{10, 11, 11, 12} {
		o.add(xid)
	}
	for xid, want := range map[uint32]bool{10: false, 11: true, 12: true, 13: false} {
		if got := o.Has(xid); got != want {
			t.Errorf("Has(%d) = %v, want %v", xid, got, want)
		}
	}
	var none *Ours
	none.add(5)
	if none.Has(5) {
		t.Error("a nil Ours has an id")
	}
}

// A Booker given an Ours records the transaction of every booking it
// commits, before the commit: the stream may deliver the booking's hints as
// soon as it commits.
func TestBookerRecordsItsTransactions(t *testing.T) {
	t.Parallel()
	db, ctx, ps := placedFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200), 6)
	ours := NewOurs(16)
	b := newTestBooker(db.Pool, BookerConfig{BatchMax: 2, Ours: ours})
	var seen bool
	b.hookBeforeWrite = func(_ context.Context, _ *pgxpool.Conn, _ int) error {
		seen = len(ours.set) > 0 // recorded before the writes, so before the commit
		return nil
	}
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil || len(res.Booked) != len(ps) {
		t.Fatalf("booked %d of %d: %v", len(res.Booked), len(ps), err)
	}
	xids := map[uint32]bool{}
	for _, bk := range res.Booked {
		xids[bk.Xid] = true
		if !ours.Has(bk.Xid) {
			t.Errorf("booking of frame %s in transaction %d not recorded", bk.Frame.Name, bk.Xid)
		}
	}
	if len(xids) != 3 || !seen {
		t.Errorf("%d transactions booked (want 3, batches of 2); recorded before the writes: %v", len(xids), seen)
	}
	audittest.Clean(t, db.Pool)
}
