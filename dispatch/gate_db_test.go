package dispatch

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// twoShowFarm is two managed shows, each on its own allocation of two hosts
// (tags "film" and "tv"), with one job of 8 frames of one core: the shows'
// batches share no row (hosts, jobs, subscriptions, folders, points).
func twoShowFarm() *seed.Farm {
	f := &seed.Farm{}
	for _, show := range []string{"film", "tv"} {
		alloc := "local." + show
		f.Allocations = append(f.Allocations, seed.Allocation{Name: alloc, Tag: show})
		f.Shows = append(f.Shows, seed.Show{Name: show, Managed: true,
			Subscriptions: []seed.Subscription{{Alloc: alloc, Size: 1_000_000, Burst: 1_000_000}}})
		for range 2 {
			f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(len(f.Hosts)), Alloc: alloc, Cores: 800,
				Mem: 64 * seed.GB})
		}
		f.Jobs = append(f.Jobs, seed.Job{Name: show + "-job", Show: show, Priority: 10, Layers: []seed.Layer{{
			Name: "l0", Frames: 8, Cores: 100, Mem: seed.GB, Tags: show}}})
	}
	return f
}

// A batch that would lock rows another batch of the same Booker holds waits
// for it before its transaction begins: meanwhile it holds no row Cuebot
// may want (a host report on its host goes through) and no transaction id
// (an open one keeps PostgreSQL from pruning the row versions the other
// batch's frame triggers leave behind). A batch sharing no row with it
// books at once.
func TestBookWaitsOutsideItsTransaction(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, twoShowFarm())
	ctx := ctxFor(t, time.Minute)
	v := booktest.ReadView(ctx, t, db.Pool)
	// Film's frames 1-4 on its first host, 5-8 on its second: the halves
	// share the job, the layer, the subscription, the folder and the point,
	// not a host.
	film := append(booktest.FirstFit(v.Tagged("film"), nil)[:4], booktest.FirstFit(v.Tagged("film"), []int{1, 0})[4:]...)
	tv := booktest.FirstFit(v.Tagged("tv"), nil)
	if len(film) != 8 || len(tv) != 8 || film[0].Host.ID == film[4].Host.ID {
		t.Fatalf("placements: film %d (hosts %s, %s), tv %d", len(film), film[0].Host.Name, film[4].Host.Name, len(tv))
	}
	b := newTestBooker(db.Pool, BookerConfig{})
	holding, release := holdFirstWrite(b)
	// The first batch (film's first half) holds its rows until released.
	type result struct {
		res BatchResult
		err error
	}
	first := make(chan result, 1)
	go func() {
		res, err := b.Book(ctx, Cluster{ID: 1}, film[:4])
		first <- result{res, err}
	}()
	<-holding
	// Film's second half waits, holding no transaction id and no row of
	// Cuebot's meanwhile.
	second := make(chan result, 1)
	go func() {
		res, err := b.Book(ctx, Cluster{ID: 2}, film[4:])
		second <- result{res, err}
	}()
	waitFor(t, "the second batch waiting", func() bool {
		return b.gate.waiting() == 1 || lockWaiters(t, db.Pool) > 0
	})
	if n := openXids(t, db.Pool); n != 1 {
		t.Errorf("%d transactions hold an id while the second batch waits, want 1 (the first batch's)", n)
	}
	// Cuebot's host report on the waiting batch's host goes through at once.
	report, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := report.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := report.Exec(ctx, `UPDATE host_stat SET ts_ping = current_timestamp WHERE pk_host = $1`,
		film[4].Host.ID); err != nil {
		t.Errorf("a host report on the waiting batch's host: %v", err)
	}
	if err := report.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Another show's batch shares nothing: it books while the first holds.
	res, err := b.Book(ctx, Cluster{ID: 3}, tv)
	if err != nil || len(res.Booked) != len(tv) {
		t.Fatalf("tv's batch beside the held one: %v; booked %d, dropped %+v", err, len(res.Booked), res.Dropped)
	}
	close(release)
	for name, ch := range map[string]chan result{"first": first, "second": second} {
		r := <-ch
		if r.err != nil || len(r.res.Booked) != 4 {
			t.Errorf("%s film batch: %v; booked %d, dropped %+v", name, r.err, len(r.res.Booked), r.res.Dropped)
		}
	}
	if n := b.gate.waiting(); n != 0 || len(b.gate.queue) != 0 {
		t.Errorf("after every batch: %d waiting in the gate, %d queued", n, len(b.gate.queue))
	}
	audittest.Clean(t, db.Pool)
}

// holdFirstWrite holds b's first batch to reach its writes, its rows locked,
// until release is closed; holding is closed once it is held.
func holdFirstWrite(b *testBooker) (holding, release chan struct{}) {
	holding, release = make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	b.hookBeforeWrite = func(ctx context.Context, tx *pgxpool.Conn, attempt int) error {
		if held.CompareAndSwap(false, true) {
			close(holding)
			<-release
		}
		return nil
	}
	return holding, release
}

// openXids counts the sessions of pool's database holding a transaction id.
func openXids(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND backend_xid IS NOT NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// lockWaiters counts the sessions of pool's database waiting for a lock.
func lockWaiters(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A batch still waiting in the gate when its caller stops booking the
// cluster (Cluster.Leaving: the cluster is being handed over) gives up
// before it begins: its placements come back untried, not deferred, since
// the giver's handover waits only for batches in the database and the
// batch's fence would fail.
func TestBookLeavingWhileWaiting(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, twoShowFarm())
	ctx := ctxFor(t, time.Minute)
	film := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool).Tagged("film"), nil)
	b := newTestBooker(db.Pool, BookerConfig{BatchMax: 2})
	holding, release := holdFirstWrite(b)
	first := make(chan error, 1)
	go func() {
		_, err := b.Book(ctx, Cluster{ID: 1}, film[:4])
		first <- err
	}()
	<-holding
	leaving := make(chan struct{})
	second := make(chan BatchResult, 1)
	go func() {
		res, err := b.Book(ctx, Cluster{ID: 2, Leaving: leaving}, film[4:])
		if err != nil {
			t.Errorf("the leaving batch: %v", err)
		}
		second <- res
	}()
	waitFor(t, "the second batch waiting", func() bool { return b.gate.waiting() == 1 })
	close(leaving)
	res := <-second
	if len(res.Untried) != 4 || len(res.Booked)+len(res.Dropped)+len(res.Deferred) != 0 {
		t.Errorf("the leaving batch: %d untried, %d booked, %d dropped, %d deferred; want all 4 untried",
			len(res.Untried), len(res.Booked), len(res.Dropped), len(res.Deferred))
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := b.gate.waiting(); n != 0 || len(b.gate.queue) != 0 {
		t.Errorf("after every batch: %d waiting in the gate, %d queued", n, len(b.gate.queue))
	}
	audittest.Clean(t, db.Pool)
}
