package cache

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// The transaction id a booking reads with pg_current_xact_id() is the one
// the stream names its echo by: the hold is released in the step that
// applies the echo, so the host is offered with exactly what the row says.
func TestEchoIsRecognisedByTransactionID(t *testing.T) {
	db := pgtest.NewDB(t)
	s, err := seed.Load(context.Background(), db.Pool, &seed.Farm{
		Hosts: []seed.Host{{Name: "e1", Alloc: "local.general", Cores: 1600, Mem: 32 * seed.GB}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	host := s.Hosts["e1"]
	h := newReplicaHarness(t, db, nil).start()
	size := match.Resources{Cores: 400, Mem: 4 * seed.GB}
	if !h.r.Hosts().Take(host, size) {
		t.Fatal("Take failed")
	}
	var xid atomic.Uint32 // set before the commit: the echo may come at once
	var echoed atomic.Bool
	hook := func(e ReplicaEvent) {
		if e.Kind == EventStream && e.Stream.Kind == cdc.EventApplied && e.Stream.Txn.Xid == xid.Load() {
			echoed.Store(true)
		}
	}
	h.hook.Store(&hook)
	var xid8 string
	err = pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(context.Background(), `SELECT pg_current_xact_id()::text`).Scan(&xid8); err != nil {
			return err
		}
		full, err := strconv.ParseUint(xid8, 10, 64)
		if err != nil {
			return err
		}
		xid.Store(uint32(full))
		_, err = tx.Exec(context.Background(), `UPDATE host SET int_cores_idle = int_cores_idle - 400,
			int_mem_idle = int_mem_idle - $2 WHERE pk_host = $1`, host, 4*seed.GB)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Booked before or after the echo: either way no hold outlives it. A
	// position far ahead stands for pg_current_wal_lsn() read while other
	// writers were busy.
	h.r.Booked(host, size, h.lsn()+1<<30, xid.Load())
	h.waitUntil("the booking's echo applied", echoed.Load)
	got, _ := h.r.Hosts().Host(host)
	if want := (match.Resources{Cores: 1200, Mem: 28 * seed.GB}); got.Idle != want {
		t.Fatalf("after the echo: idle %+v, want %+v", got.Idle, want)
	}
}
