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

// TestBenchTriggerOverhead runs a Cuebot-shaped write load with every
// trigger our migrations put on Cuebot's tables and without them (disabled,
// then enabled again), in alternating rounds of one run, and reports the
// overhead.
//
// Each loop of a worker is what Cuebot writes around one retried frame:
// the frame stops RUNNING -> WAITING with its proc unlinked, the proc is
// deleted and the host given back (Cuebot's two release transactions), the
// frame is booked again (cuebotsim.Sim.Book) and the host reports (host_stat,
// its procs' and frames' memory). Every layer holds one frame, so every
// retry moves a layer's waiting count 0 -> 1: the worst case for the
// layer_stat trigger. Scenario "cuebot-show" is a show Cuebot books (the
// trigger runs its check and sends nothing), "managed-show" one cuesched
// books (every retry sends a hint). A listener and a change stream drain
// (and count) the hints in both arms, as a cuesched instance would: the
// walsender's decoding is part of what is measured.
func TestBenchTriggerOverhead(t *testing.T) {
	benchOnly(t)
	const (
		workers   = 4
		perWorker = 16 // layers (one frame each) per worker
		blocks    = 16 // per scenario, each of 4 rounds: with, without, without, with
		roundFor  = time.Second
	)
	for _, sc := range []struct {
		name    string
		managed bool
	}{{"cuebot-show", false}, {"managed-show", true}} {
		t.Run(sc.name, func(t *testing.T) {
			db := pgtest.NewDB(t)
			ctx := context.Background()
			f := &seed.Farm{Shows: []seed.Show{{Name: "load", Managed: sc.managed,
				Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 1e7, Burst: 2e9}}}}}
			for i := range 2 * workers {
				f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: "local.general",
					Cores: 3200, Mem: 128 * seed.GB})
			}
			s, err := seed.Load(ctx, db.Pool, f, 11)
			if err != nil {
				t.Fatal(err)
			}
			sim := &cuebotsim.Sim{Pool: db.Pool}
			type slot struct{ frame, host string }
			work := make([][]slot, workers)
			for w := range workers {
				// Cuebot leaves a managed show's counters to the scheduler, so
				// they only grow here: caps out of the way.
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
					if _, err := sim.Book(ctx, frame, host, 100, seed.GB, 0, 0); err != nil {
						t.Fatal(err)
					}
					work[w] = append(work[w], slot{frame, host})
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
			var hints atomic.Int64
			lctx, stopListen := context.WithCancel(ctx)
			listened := make(chan struct{}, 2)
			go func() {
				defer func() { listened <- struct{}{} }()
				for {
					if _, err := conn.WaitForNotification(lctx); err != nil {
						return
					}
					hints.Add(1)
				}
			}()
			stream := cdc.NewStream(db.DSN, hintCounter{&hints}, slog.New(slog.DiscardHandler))
			go func() { defer func() { listened <- struct{}{} }(); stream.Run(lctx) }()
			defer func() { stopListen(); <-listened; <-listened; conn.Close(ctx) }()
			<-stream.Ready()

			// Every trigger of ours on Cuebot's tables, whatever migration
			// added it (0004's and 0008's hints, 0005's outbox cleanup on
			// proc delete, ...), is switched off and on again by name.
			ours, err := ourTriggers(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			toggle := func(on bool) error {
				verb := "DISABLE"
				if on {
					verb = "ENABLE"
				}
				var sql strings.Builder
				for _, tr := range ours {
					fmt.Fprintf(&sql, "ALTER TABLE %s %s TRIGGER %s;\n", tr.table, verb, tr.name)
				}
				_, err := db.Pool.Exec(ctx, sql.String())
				return err
			}
			t.Logf("%s: our triggers on Cuebot's tables: %v", sc.name, ours)
			next := make([]int, workers)
			round := func() (loops int64, err error) {
				var n atomic.Int64
				var firstErr error
				var once sync.Once
				stop := time.Now().Add(roundFor)
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(stop) {
							sl := work[w][next[w]%perWorker]
							next[w]++
							err := sim.Retry(ctx, sl.frame)
							var proc string
							if err == nil {
								proc, err = sim.Book(ctx, sl.frame, sl.host, 100, seed.GB, 0, 0)
							}
							if err == nil && sc.managed {
								// cuesched's booking writes the proc's outbox row
								// (both arms alike); Cuebot's release deletes the
								// proc and 0005's trigger the row.
								_, err = db.Pool.Exec(ctx, `INSERT INTO cuesched.launch_outbox
									(proc_id, frame_id, frame_version, host_id, host_name, cluster_id, state)
									VALUES ($1, $2, 1, $3, 'host', 1, 'launched')`, proc, sl.frame, sl.host)
							}
							if err == nil {
								err = sim.HostReport(ctx, sl.host, 64*seed.GB)
							}
							if err != nil {
								once.Do(func() { firstErr = err })
								return
							}
							n.Add(1)
						}
					}()
				}
				wg.Wait()
				return n.Load(), firstErr
			}
			if _, err := round(); err != nil { // warm up, triggers on
				t.Fatal(err)
			}
			// ABBA blocks, so drift over the run falls on both sides alike;
			// each block gives one ratio.
			var on, off, ratios []float64
			var cpuOn, cpuOff float64
			var loopsOn, loopsOff int64
			triggers := true
			hintsOn := int64(0)
			for r := range 4 * blocks {
				want := r%4 == 0 || r%4 == 3
				if want != triggers {
					if err := toggle(want); err != nil {
						t.Fatal(err)
					}
					triggers = want
				}
				before := hints.Load()
				cpu0, err := serverCPU(ctx, db)
				if err != nil {
					t.Fatal(err)
				}
				loops, err := round()
				if err != nil {
					t.Fatal(err)
				}
				cpu1, err := serverCPU(ctx, db)
				if err != nil {
					t.Fatal(err)
				}
				if !triggers {
					// Nothing deleted the outbox rows of the procs released
					// in this round: out of the way, untimed.
					if _, err := db.Pool.Exec(ctx, `DELETE FROM cuesched.launch_outbox`); err != nil {
						t.Fatal(err)
					}
				}
				var cpu float64
				for pid, c := range cpu1 {
					cpu += c - cpu0[pid]
				}
				rate := float64(loops) / roundFor.Seconds()
				if triggers {
					on = append(on, rate)
					hintsOn += hints.Load() - before
					cpuOn += cpu
					loopsOn += loops
				} else {
					off = append(off, rate)
					cpuOff += cpu
					loopsOff += loops
				}
				if r%4 == 3 {
					n := len(on)
					ratios = append(ratios, (on[n-1]+on[n-2])/(off[n-1]+off[n-2]))
				}
			}
			mOn, mOff := mean(on), mean(off)
			t.Logf("%s: %d workers, %d blocks of 4 rounds of %s: loops/s with triggers mean %.1f, without %.1f",
				sc.name, workers, blocks, roundFor, mOn, mOff)
			t.Logf("%s: per-block overhead %s %%", sc.name, overheads(ratios))
			t.Logf("%s: throughput overhead: pooled %.1f%%, median of blocks %.1f%%; hints sent with triggers: %d",
				sc.name, 100*(1-mOn/mOff), 100*(1-median(ratios)), hintsOn)
			if o := 100 * (1 - median(ratios)); o > 3 {
				t.Errorf("%s: throughput overhead %.1f%% (median of blocks), above the target 3%%", sc.name, o)
			}
			perOn, perOff := 1000*cpuOn/float64(loopsOn), 1000*cpuOff/float64(loopsOff)
			t.Logf("%s: server CPU per loop (the database's backends): with triggers %.3f ms, without %.3f ms: overhead %.1f%%",
				sc.name, perOn, perOff, 100*(perOn/perOff-1))
		})
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

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

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
