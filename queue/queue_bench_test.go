package queue_test

// The queue's two benchmarks need a database and take about a minute each,
// so they are tests that run only with CUESCHED_BENCH=1:
//
//	CUESCHED_BENCH=1 go test -run 'TestBench' -v -count=1 -timeout 10m ./queue

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/queue"
)

func benchOnly(t *testing.T) {
	if os.Getenv("CUESCHED_BENCH") != "1" {
		t.Skip("benchmark: set CUESCHED_BENCH=1")
	}
}

// TestBenchTriggerOverhead measures what every trigger our migrations put
// on Cuebot's tables adds to a Cuebot-shaped write load.
//
// Each loop of a worker is what Cuebot writes around one retried frame:
// the frame stops RUNNING -> WAITING with its proc unlinked, the proc is
// deleted and the host given back (Cuebot's two release transactions), the
// frame is booked again (cuebotsim.Sim.Book) and the host reports (host_stat,
// its procs' and frames' memory). Every layer holds one frame, so every
// retry moves a layer's waiting count 0 -> 1 and every booking back to 0:
// the worst case for the layer_stat triggers. Scenario "cuebot-show" is a
// show Cuebot books (the triggers run their check and send nothing),
// "managed-show" one cuesched books (every retry sends a hint). A listener
// and a change stream drain (and count) the hints, as a cuesched instance
// would: the walsender's decoding is part of what is measured.
//
// Two twin databases in one server hold the same farm; our triggers are on
// in one and off in the other, swapped every block. Each worker runs its
// loops on the twins in turn, so whatever else the machine does falls on
// both arms alike within milliseconds: with the arms in alternating rounds
// of a second (this benchmark until 2026-12-03), blocks scattered by 10-20%
// on this 2-core machine and a 3% target could not be told. Two figures:
// the time a loop takes (Cuebot's writes as its threads wait for them) with
// our triggers against without, which fails the 3% target only when above it
// by more than twice its standard error (from the blocks' scatter), and the
// time PostgreSQL counts inside our trigger functions
// (pg_stat_user_functions) as a share of the loops' time, which fails above
// 3%.
func TestBenchTriggerOverhead(t *testing.T) {
	benchOnly(t)
	const (
		workers   = 4
		perWorker = 16 // layers (one frame each) per worker
		blocks    = 24 // per scenario; the twin with triggers alternates
		blockFor  = 2 * time.Second
	)
	for _, sc := range []struct {
		name    string
		managed bool
	}{{"cuebot-show", false}, {"managed-show", true}} {
		t.Run(sc.name, func(t *testing.T) {
			ctx := context.Background()
			twins := [2]*twin{newTwin(t, sc.managed, workers, perWorker), newTwin(t, sc.managed, workers, perWorker)}
			t.Logf("%s: our triggers on Cuebot's tables: %v", sc.name, twins[0].triggers)

			// block runs every worker for blockFor, each loop on the twins in
			// turn (which goes first alternating), and returns per twin the
			// loops and the time they took.
			next := make([]int, workers)
			var each [2][]float64 // every loop's time (ms) with and without our triggers
			var eachMu sync.Mutex
			on := 0 // the twin with our triggers in this block
			block := func() (loops [2]int64, busy [2]time.Duration, err error) {
				var n, ns [2]atomic.Int64
				var firstErr error
				var once sync.Once
				stop := time.Now().Add(blockFor)
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var mine [2][]float64
						defer func() {
							eachMu.Lock()
							defer eachMu.Unlock()
							for k := range 2 {
								arm := 1
								if k == on {
									arm = 0
								}
								each[arm] = append(each[arm], mine[k]...)
							}
						}()
						for time.Now().Before(stop) {
							i := next[w]
							next[w]++
							for k := range 2 {
								tw := (i + k) % 2
								start := time.Now()
								if err := twins[tw].loop(ctx, w, i%perWorker); err != nil {
									once.Do(func() { firstErr = err })
									return
								}
								took := time.Since(start)
								n[tw].Add(1)
								ns[tw].Add(int64(took))
								mine[tw] = append(mine[tw], 1000*took.Seconds())
							}
						}
					}()
				}
				wg.Wait()
				for k := range 2 {
					loops[k], busy[k] = n[k].Load(), time.Duration(ns[k].Load())
				}
				return loops, busy, firstErr
			}
			if _, _, err := block(); err != nil { // warm up, triggers on in both
				t.Fatal(err)
			}
			each = [2][]float64{}
			for _, tw := range twins {
				// What the warm-up's sessions reported is forgotten; what
				// they hold unreported is counted with the measurement,
				// which can only raise the share below.
				if _, err := tw.db.Pool.Exec(ctx, "SELECT pg_stat_reset()"); err != nil {
					t.Fatal(err)
				}
			}
			var ratios []float64
			var loopsOn, loopsOff int64
			var busyOn, busyOff time.Duration
			var cpuOn, cpuOff float64
			for b := range blocks {
				on = b % 2
				for k, tw := range twins {
					if err := tw.toggle(ctx, k == on); err != nil {
						t.Fatal(err)
					}
				}
				var cpu0 [2]map[int32]float64
				for k, tw := range twins {
					var err error
					if cpu0[k], err = serverCPU(ctx, tw.db); err != nil {
						t.Fatal(err)
					}
				}
				loops, busy, err := block()
				if err != nil {
					t.Fatal(err)
				}
				for k, tw := range twins {
					cpu1, err := serverCPU(ctx, tw.db)
					if err != nil {
						t.Fatal(err)
					}
					var cpu float64
					for pid, c := range cpu1 {
						cpu += c - cpu0[k][pid]
					}
					if k == on {
						cpuOn += cpu
					} else {
						cpuOff += cpu
						// Nothing deleted the outbox rows of the procs
						// released here: out of the way, untimed.
						if _, err := tw.db.Pool.Exec(ctx, `DELETE FROM cuesched.launch_outbox`); err != nil {
							t.Fatal(err)
						}
					}
				}
				off := 1 - on
				loopsOn, loopsOff = loopsOn+loops[on], loopsOff+loops[off]
				busyOn, busyOff = busyOn+busy[on], busyOff+busy[off]
				perOn := busy[on].Seconds() / float64(loops[on])
				perOff := busy[off].Seconds() / float64(loops[off])
				ratios = append(ratios, perOff/perOn)
			}
			perOn := 1000 * busyOn.Seconds() / float64(loopsOn)
			perOff := 1000 * busyOff.Seconds() / float64(loopsOff)
			t.Logf("%s: %d workers, %d blocks of %s: a loop takes %.2f ms with our triggers, %.2f ms without (%d and %d loops)",
				sc.name, workers, blocks, blockFor, perOn, perOff, loopsOn, loopsOff)
			t.Logf("%s: per-block overhead %s %%", sc.name, overheads(ratios))
			pooled := 100 * (perOn/perOff - 1)
			// The blocks' scatter gives the pooled figure's standard error.
			var sum, sq float64
			for _, r := range ratios {
				o := 100 * (1/r - 1)
				sum, sq = sum+o, sq+o*o
			}
			nb := float64(len(ratios))
			se := math.Sqrt(max(0, sq/nb-(sum/nb)*(sum/nb)) / (nb - 1))
			t.Logf("%s: time a loop takes: overhead pooled %.1f%% (standard error %.1f%%), median of blocks %.1f%%, "+
				"of the loops' median %.1f%%; hints sent: %d", sc.name, pooled, se, 100*(1/median(ratios)-1),
				100*(median(each[0])/median(each[1])-1), twins[0].hints.Load()+twins[1].hints.Load())
			t.Logf("%s: server CPU per loop (the twins' backends and walsenders): with triggers %.3f ms, without %.3f ms: overhead %.1f%%",
				sc.name, 1000*cpuOn/float64(loopsOn), 1000*cpuOff/float64(loopsOff),
				100*((cpuOn/float64(loopsOn))/(cpuOff/float64(loopsOff))-1))
			// Blocks scatter by several points on this machine: the loops' time
			// fails the target only when it is above it by more than twice its
			// standard error. The time inside our functions, below, is the
			// precise figure.
			if pooled-2*se > 3 {
				t.Errorf("%s: our triggers make Cuebot's writes %.1f%% (± %.1f%%) slower, above the target 3%%",
					sc.name, pooled, se)
			}

			// Every loop with triggers runs work_retry twice (the retry's
			// 0 -> 1, the booking's 1 -> 0): what functionTimes waits for.
			var oursMs float64
			for _, tw := range twins {
				fns, err := functionTimes(ctx, tw.db, loopsOn) // each twin ran about half of them
				if err != nil {
					t.Fatal(err)
				}
				for _, fn := range fns {
					if strings.HasPrefix(fn.name, "cuesched.") {
						oursMs += fn.ms
					}
				}
			}
			share := 100 * oursMs / (1000 * busyOn.Seconds())
			t.Logf("%s: time in our trigger functions: %.3f ms a loop of %.2f ms: %.2f%%",
				sc.name, oursMs/float64(loopsOn), perOn, share)
			if share > 3 {
				t.Errorf("%s: our trigger functions take %.2f%% of the time of Cuebot's writes, above the target 3%%", sc.name, share)
			}
		})
	}
}

// twin is one database of TestBenchTriggerOverhead: a farm, the layers each
// worker retries, and a listener and change stream draining the hints.
type twin struct {
	db       *pgtest.DB
	sim      *cuebotsim.Sim
	managed  bool
	work     [][]slot
	triggers []trigger
	on       bool // our triggers enabled
	hints    atomic.Int64
}

type slot struct{ frame, host string }

func newTwin(t *testing.T, managed bool, workers, perWorker int) *twin {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	f := &seed.Farm{Shows: []seed.Show{{Name: "load", Managed: managed,
		Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 1e7, Burst: 2e9}}}}}
	for i := range 2 * workers {
		f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: "local.general",
			Cores: 3200, Mem: 128 * seed.GB})
	}
	s, err := seed.Load(ctx, db.Pool, f, 11)
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL times PL/pgSQL functions (pg_stat_user_functions) in
	// sessions that track them: the pool's next connections.
	if _, err := db.Pool.Exec(ctx, `DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET track_functions = pl',
		current_database()); END$$`); err != nil {
		t.Fatal(err)
	}
	db.Pool.Reset()
	tw := &twin{db: db, sim: &cuebotsim.Sim{Pool: db.Pool}, managed: managed, work: make([][]slot, workers), on: true}
	for w := range workers {
		// Cuebot leaves a managed show's counters to the scheduler, so they
		// only grow here: caps out of the way.
		j := seed.Job{Name: fmt.Sprintf("load-%d", w), Show: "load", MaxCores: 2e9}
		for l := range perWorker {
			j.Layers = append(j.Layers, seed.Layer{Name: fmt.Sprintf("l%02d", l), Frames: 1, Cores: 100, Mem: seed.GB})
		}
		k, err := s.Launch(ctx, j)
		if err != nil {
			t.Fatal(err)
		}
		for l := range perWorker {
			host := s.Hosts[seed.LoopbackName(2*w+l%2)]
			frame := k.Frames[fmt.Sprintf("0001-l%02d", l)]
			if _, err := tw.sim.Book(ctx, frame, host, 100, seed.GB, 0, 0); err != nil {
				t.Fatal(err)
			}
			tw.work[w] = append(tw.work[w], slot{frame, host})
		}
	}
	// A listener drains (and counts) what is sent, as cuesched would.
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN cuesched_work"); err != nil {
		t.Fatal(err)
	}
	lctx, stopListen := context.WithCancel(ctx)
	listened := make(chan struct{}, 2)
	go func() {
		defer func() { listened <- struct{}{} }()
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				return
			}
			tw.hints.Add(1)
		}
	}()
	stream := cdc.NewStream(db.DSN, hintCounter{&tw.hints}, slog.New(slog.DiscardHandler))
	go func() { defer func() { listened <- struct{}{} }(); stream.Run(lctx) }()
	t.Cleanup(func() { stopListen(); <-listened; <-listened; conn.Close(ctx) })
	<-stream.Ready()
	// Every trigger of ours on Cuebot's tables, whatever migration added it
	// (0004's and 0008's hints, 0005's outbox cleanup on proc delete, ...),
	// is switched off and on again by name.
	if tw.triggers, err = ourTriggers(ctx, db); err != nil {
		t.Fatal(err)
	}
	return tw
}

// loop is one retried frame of worker w's layer l (see TestBenchTriggerOverhead).
func (tw *twin) loop(ctx context.Context, w, l int) error {
	sl := tw.work[w][l]
	err := tw.sim.Retry(ctx, sl.frame)
	var proc string
	if err == nil {
		proc, err = tw.sim.Book(ctx, sl.frame, sl.host, 100, seed.GB, 0, 0)
	}
	if err == nil && tw.managed {
		// cuesched's booking writes the proc's outbox row (both arms
		// alike); Cuebot's release deletes the proc and 0005's trigger the
		// row.
		_, err = tw.db.Pool.Exec(ctx, `INSERT INTO cuesched.launch_outbox
			(proc_id, frame_id, frame_version, host_id, host_name, cluster_id, state)
			VALUES ($1, $2, 1, $3, 'host', 1, 'launched')`, proc, sl.frame, sl.host)
	}
	if err == nil {
		err = tw.sim.HostReport(ctx, sl.host, 64*seed.GB)
	}
	return err
}

// toggle enables or disables every trigger of ours on Cuebot's tables.
func (tw *twin) toggle(ctx context.Context, on bool) error {
	if on == tw.on {
		return nil
	}
	verb := "DISABLE"
	if on {
		verb = "ENABLE"
	}
	var sql strings.Builder
	for _, tr := range tw.triggers {
		fmt.Fprintf(&sql, "ALTER TABLE %s %s TRIGGER %s;\n", tr.table, verb, tr.name)
	}
	if _, err := tw.db.Pool.Exec(ctx, sql.String()); err != nil {
		return err
	}
	tw.on = on
	return nil
}

// fnTime is one function's calls and time (ms, its own and what it called)
// as pg_stat_user_functions counts them.
type fnTime struct {
	name  string
	calls int64
	ms    float64
}

// functionTimes closes the pool's sessions, so each reports what it still
// holds (a session reports at most once a second, and on exit), and reads
// the database's function times once the functions of schema cuesched have
// counted want calls, or after ten seconds.
func functionTimes(ctx context.Context, db *pgtest.DB, want int64) ([]fnTime, error) {
	db.Pool.Reset()
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
			return nil, err
		}
		rows, err := conn.Query(ctx, `SELECT schemaname || '.' || funcname, calls, total_time
			FROM pg_stat_user_functions ORDER BY total_time DESC`)
		if err != nil {
			return nil, err
		}
		fns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fnTime, error) {
			var f fnTime
			return f, r.Scan(&f.name, &f.calls, &f.ms)
		})
		if err != nil {
			return nil, err
		}
		var ours int64
		for _, f := range fns {
			if strings.HasPrefix(f.name, "cuesched.") {
				ours += f.calls
			}
		}
		if ours >= want || time.Now().After(deadline) {
			return fns, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type trigger struct{ table, name string }

func (tr trigger) String() string { return tr.table + "." + tr.name }

// ourTriggers lists the triggers on Cuebot's tables whose functions live in
// schema cuesched, quoted for ALTER TABLE.
func ourTriggers(ctx context.Context, db *pgtest.DB) ([]trigger, error) {
	rows, err := db.Pool.Query(ctx, `
		SELECT t.tgrelid::regclass::text, quote_ident(t.tgname)
		  FROM pg_trigger t
		  JOIN pg_proc p ON p.oid = t.tgfoid
		  JOIN pg_class c ON c.oid = t.tgrelid
		 WHERE NOT t.tgisinternal
		   AND p.pronamespace = 'cuesched'::regnamespace
		   AND c.relnamespace <> 'cuesched'::regnamespace
		 ORDER BY 1, 2`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (trigger, error) {
		var tr trigger
		return tr, r.Scan(&tr.table, &tr.name)
	})
}

// hintCounter is a change stream's sink that counts the work hints.
type hintCounter struct{ n *atomic.Int64 }

func (hintCounter) Reset(context.Context, pgx.Tx, cdc.LSN) error { return nil }
func (hintCounter) Advance(cdc.LSN)                              {}
func (c hintCounter) Apply(t *cdc.Txn) error {
	for _, m := range t.Messages {
		if m.Prefix == cdc.WorkChannel {
			c.n.Add(1)
		}
	}
	return nil
}

// TestBenchLaunchToQueued measures the time from the COMMIT of a job's
// launch returning in the driver to its layers being in the queue, for 200
// jobs launched at random times over about a minute, with an event-fed queue
// (listener + triggers) and a queue polling every 5 s watching the same
// database in the same run.
func TestBenchLaunchToQueued(t *testing.T) {
	benchOnly(t)
	const (
		jobs   = 200
		window = 60 * time.Second
		poll   = 5 * time.Second
	)
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type feed struct {
		name string
		q    *queue.Queue
		mu   sync.Mutex
		seen map[string]time.Time // job -> first seen queued
		all  chan struct{}
	}
	newFeed := func(name string) *feed {
		fd := &feed{name: name, q: queue.New(db.Pool, nil), seen: map[string]time.Time{}, all: make(chan struct{})}
		fd.q.OnWork(func(k cluster.Key) {
			now := time.Now()
			ls := fd.q.Layers(k)
			fd.mu.Lock()
			defer fd.mu.Unlock()
			for _, l := range ls {
				if _, ok := fd.seen[l.JobID]; !ok {
					fd.seen[l.JobID] = now
					if len(fd.seen) == jobs {
						close(fd.all)
					}
				}
			}
		})
		return fd
	}
	events, polled := newFeed("events"), newFeed("poll 5s")
	l := cdc.NewListener(db.DSN, nil)
	l.Metrics = cdc.NewListenMetrics(prometheus.NewRegistry())
	l.Handle(cdc.WorkChannel, events.q.Notify)
	l.OnConnect(events.q.Resync)
	connected := l.Connected()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{events.q.Run, l.Run, polled.q.Run,
		func(ctx context.Context) error { return polled.q.Poll(ctx, poll) }} {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	<-connected

	rng := rand.New(rand.NewPCG(42, 4242))
	offsets := make([]time.Duration, jobs)
	for i := range offsets {
		offsets[i] = time.Duration(rng.Int64N(int64(window)))
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
	committed := map[string]time.Time{}
	start := time.Now()
	for i, off := range offsets {
		if d := time.Until(start.Add(off)); d > 0 {
			time.Sleep(d) // the load's own schedule
		}
		k, err := s.Launch(ctx, seed.Job{Name: fmt.Sprintf("lat-%03d", i), Show: "managed", Layers: []seed.Layer{
			{Name: "a", Frames: 5, Cores: 100, Mem: seed.GB}, {Name: "b", Frames: 5, Cores: 100, Mem: seed.GB}}})
		if err != nil {
			t.Fatal(err)
		}
		committed[k.ID] = time.Now()
	}
	for _, fd := range []*feed{events, polled} {
		select {
		case <-fd.all:
		case <-time.After(2 * poll):
			t.Fatalf("%s: only %d of %d jobs queued", fd.name, len(fd.seen), jobs)
		}
		fd.mu.Lock()
		var lat []float64
		for id, c := range committed {
			lat = append(lat, fd.seen[id].Sub(c).Seconds()*1000)
		}
		fd.mu.Unlock()
		sort.Float64s(lat)
		t.Logf("%s: launch COMMIT -> layers queued over %d jobs: p50 %.1f ms, p99 %.1f ms, min %.1f ms, max %.1f ms",
			fd.name, len(lat), pct(lat, 0.50), pct(lat, 0.99), lat[0], lat[len(lat)-1])
	}
	t.Logf("whole run %.1f s", time.Since(start).Seconds())
}

// serverCPU reads the CPU time (user + system, seconds) each backend of the
// test database has used so far, from /proc: the server runs on this machine.
// Unlike throughput, it hardly moves with what else the machine is doing.
func serverCPU(ctx context.Context, db *pgtest.DB) (map[int32]float64, error) {
	rows, err := db.Pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	out := map[int32]float64{}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // ended meanwhile
		}
		// Fields after the command name (which may hold spaces) in parens.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		out[pid] = (utime + stime) / clockTicks
	}
	return out, nil
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return pct(s, 0.5)
}

// pct is the p-quantile of sorted xs (nearest rank).
func pct(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func overheads(ratios []float64) string {
	out := ""
	for i, r := range ratios {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.1f", 100*(1-r))
	}
	return out
}
