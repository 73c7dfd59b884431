package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// writer makes random Cuebot-shaped changes to hosts, tags, allocations,
// procs and caps, each in a short transaction of its own.
type writer struct {
	pool   *pgxpool.Pool
	hosts  []string
	allocs []string
	layers []layerKeys
	show   string
	rng    *rand.Rand
}

type layerKeys struct{ layer, job string }

func newWriter(pool *pgxpool.Pool, s *seed.Seeded, seedN uint64) *writer {
	w := &writer{pool: pool, show: s.Shows["stress"], rng: rand.New(rand.NewPCG(seedN, 99))}
	for _, id := range s.Hosts {
		w.hosts = append(w.hosts, id)
	}
	for _, id := range s.Allocs {
		w.allocs = append(w.allocs, id)
	}
	for _, j := range s.Jobs {
		for _, l := range j.Layers {
			w.layers = append(w.layers, layerKeys{l, j.ID})
		}
	}
	return w
}

func (w *writer) step(ctx context.Context) error {
	host := w.hosts[w.rng.IntN(len(w.hosts))]
	var stmts []struct {
		sql  string
		args []any
	}
	add := func(sql string, args ...any) {
		stmts = append(stmts, struct {
			sql  string
			args []any
		}{sql, args})
	}
	for range w.rng.IntN(3) + 1 {
		switch w.rng.IntN(9) {
		case 0, 1:
			add(`UPDATE host SET int_cores_idle = int_cores * $2 / 100, int_mem_idle = int_mem * $3 / 100 WHERE pk_host = $1`,
				host, w.rng.IntN(101), w.rng.IntN(101))
		case 2:
			add(`UPDATE host SET str_lock_state = $2 WHERE pk_host = $1`, host, []string{"OPEN", "LOCKED"}[w.rng.IntN(2)])
		case 3:
			add(`UPDATE host_stat SET str_state = $2, int_mem_free = int_mem_total * $3 / 100, ts_ping = now()
				WHERE pk_host = $1`, host, []string{"UP", "DOWN", "UP"}[w.rng.IntN(3)], w.rng.IntN(101))
		case 4:
			add(`INSERT INTO host_tag (pk_host_tag, pk_host, str_tag, str_tag_type) VALUES (uuid_generate_v4(), $1, $2, 'MANUAL')`,
				host, fmt.Sprintf("Extra%d", w.rng.IntN(5)))
		case 5:
			add(`DELETE FROM host_tag WHERE pk_host_tag = (SELECT pk_host_tag FROM host_tag
				WHERE pk_host = $1 AND str_tag_type = 'MANUAL' LIMIT 1)`, host)
		case 6:
			add(`UPDATE host SET pk_alloc = $2 WHERE pk_host = $1`, host, w.allocs[w.rng.IntN(len(w.allocs))])
		case 7:
			l := w.layers[w.rng.IntN(len(w.layers))]
			add(`INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, int_cores_reserved, int_mem_reserved,
				int_gpus_reserved) VALUES (uuid_generate_v4(), $1, $2, $3, $4, $5, 1048576, $6)`,
				host, w.show, l.layer, l.job, (w.rng.IntN(8)+1)*100, w.rng.IntN(2))
		case 8:
			add(`DELETE FROM proc WHERE pk_proc = (SELECT pk_proc FROM proc ORDER BY pk_proc LIMIT 1 OFFSET $1)`,
				w.rng.IntN(8))
		}
	}
	if w.rng.IntN(10) == 0 {
		add(`UPDATE subscription SET int_burst = int_burst + 1 WHERE pk_show = $1`, w.show)
		add(`UPDATE job_resource SET int_max_cores = int_max_cores + 1
			WHERE pk_job = (SELECT pk_job FROM job ORDER BY pk_job LIMIT 1)`)
	}
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
				return fmt.Errorf("%s: %w", s.sql, err)
			}
		}
		return nil
	})
}

// TestInitialLoadUnderConcurrentWrites loads 2,000 hosts (10,000 at full
// size, seed.FullSize; the hook below puts writes inside the load at any
// size) while writers
// change hosts, tags, allocations, procs and caps, some of it committed
// while the snapshot is being read, and then compares the cache with the
// tables row by row: nothing lost, nothing applied twice.
func TestInitialLoadUnderConcurrentWrites(t *testing.T) {
	db := pgtest.NewDB(t)
	hosts := 2000
	if seed.FullSize() {
		hosts = 10000
	}
	s := loadFarm(t, db, seed.Stress(1, hosts, 3))
	h := newReplicaHarness(t, db, nil)
	ctx := context.Background()

	// Writes committed while the load reads the hosts' tags, made on the
	// load's own goroutine so they certainly fall between the snapshot and
	// the stream.
	during := newWriter(db.Pool, s, 1)
	var duringLoad atomic.Int64
	hook := func(e ReplicaEvent) {
		if e.Kind == EventLoading && e.Table == "host_tag" && duringLoad.Load() == 0 {
			for range 50 {
				if err := during.step(ctx); err != nil {
					t.Errorf("write during the load: %v", err)
					return
				}
				duringLoad.Add(1)
			}
		}
	}
	h.hook.Store(&hook)

	// And writers running all along, before, during and after. They stop
	// between transactions (a context canceled during a COMMIT could leave
	// it to complete on the server after the writer returned).
	var stopped atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWriter(db.Pool, s, uint64(i+2))
			for !stopped.Load() {
				if err := w.step(ctx); err != nil {
					t.Errorf("writer: %v", err)
					return
				}
				writes.Add(1)
			}
		}()
	}
	h.start()
	// Let the writers go on for a while after the load, on the stream.
	target := writes.Load() + 300
	h.waitUntil("300 more writes after the load", func() bool { return writes.Load() >= target })
	stopped.Store(true)
	wg.Wait()
	h.sync()
	if duringLoad.Load() != 50 {
		t.Fatalf("%d writes committed during the load, want 50", duringLoad.Load())
	}
	t.Logf("%d writes by the concurrent writers, 50 during the load", writes.Load())
	if n := h.r.Hosts().Len(); n != hosts {
		t.Fatalf("%d hosts in the cache", n)
	}
	h.matchesDB()
}

// TestResyncAfterTerminateAndRestart: the walsender terminated, then the
// whole PostgreSQL restarted, each with changes made while the stream was
// down; the cache equals the tables again each time, and once the replica
// stops no replication slot is left.
func TestResyncAfterTerminateAndRestart(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, seed.Stress(2, 300, 2))
	h := newReplicaHarness(t, db, nil).start()
	ctx := context.Background()
	w := newWriter(db.Pool, s, 5)
	for range 30 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.sync()
	h.matchesDB()

	// The walsender is terminated; changes land before the reconnect.
	loads := h.loads.Load()
	var pid int
	if err := db.Pool.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots
		WHERE database = current_database() AND active_pid IS NOT NULL`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	h.exec(`SELECT pg_terminate_backend($1)`, pid)
	for range 30 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.waitUntil("a new snapshot after the walsender was terminated", func() bool { return h.loads.Load() > loads })
	h.sync()
	h.matchesDB()

	// PostgreSQL restarts: every session ends, the temporary slot with it.
	loads = h.loads.Load()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := db.Cluster.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h.pool = pool
	w = newWriter(pool, s, 6)
	for range 30 {
		if err := w.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.waitUntil("a new snapshot after the restart", func() bool { return h.loads.Load() > loads })
	h.sync()
	h.matchesDB()

	h.stop()
	if n := h.slots(); n != 0 {
		t.Fatalf("%d replication slots left after the replica stopped", n)
	}
}

// TestEchoOfABooking: capacity booked through the index stays held until
// the stream has passed the booking's commit; at no applied transaction is
// the host offered with its pre-booking capacity.
func TestEchoOfABooking(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	h := newReplicaHarness(t, db, nil)
	host := s.Hosts["127.10.0.1"]
	var violations atomic.Int64
	var booked atomic.Bool
	hook := func(e ReplicaEvent) {
		if e.Kind == EventStream && e.Stream.Kind == cdc.EventApplied && booked.Load() {
			if x, _ := h.r.Hosts().Host(host); x.Idle.Cores > 400 {
				violations.Add(1)
			}
		}
	}
	h.hook.Store(&hook)
	h.start()
	size := match.Resources{Cores: 400, Mem: 4 * gb}
	if !h.r.Hosts().Take(host, size) {
		t.Fatal("Take failed")
	}
	booked.Store(true)
	sim := newSim(db)
	frame := s.Jobs["job-a"].Frames["0001-render"]
	if _, err := sim.Book(context.Background(), frame, host, size.Cores, size.Mem, 0, 0); err != nil {
		t.Fatal(err)
	}
	lsn := h.lsn()
	h.r.Booked(host, size, lsn, 0) // a Cuebot-style booking: its xid is not known
	if x, _ := h.r.Hosts().Host(host); x.Idle.Cores > 400 {
		t.Fatalf("after Booked: idle %+v", x.Idle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.r.WaitApplied(ctx, lsn); err != nil {
		t.Fatal(err)
	}
	if x, _ := h.r.Hosts().Host(host); x.Idle.Cores != 400 || x.Idle.Mem != 28*gb {
		t.Fatalf("after the echo: idle %+v, want 400 cores and 28 GB", x.Idle)
	}
	if n := violations.Load(); n > 0 {
		t.Fatalf("%d applied transactions saw the host offered with its pre-booking capacity", n)
	}
	h.matchesDB()
}
