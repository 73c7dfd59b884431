package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// flowTags are the tags the flowing work's layers carry: the allocation
// tags of seed.Stress and its manual tags, so every allocation and
// manual-tag cluster has work.
var flowTags = []string{"stress_a", "stress_b", "stress_c", "pool1", "pool2", "pool3", "pool4", "pool5", "pool6",
	"pool7", "pool8"}

// flowFarm loads seed.Stress's allocations, show and hosts, the hosts cut to
// 16 cores and 64 GB: room for several hundred one-core frames.
func flowFarm(t *testing.T, db *pgtest.DB, hosts int) *seed.Seeded {
	t.Helper()
	farm := seed.Stress(23, hosts, 0)
	for i := range farm.Hosts {
		farm.Hosts[i].Cores, farm.Hosts[i].Mem = 16*seed.Core, 64*seed.GB
	}
	s, err := seed.Load(t.Context(), db.Pool, farm, 23)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// flow keeps work flowing through every allocation and manual-tag cluster:
// a job with one one-core frame per cluster is launched every flowEvery, and
// frames complete (startCompleter), so the farm keeps room and a cluster
// with an owner books its new work within a round.
type flow struct {
	*completer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func startFlow(t *testing.T, db *pgtest.DB, s *seed.Seeded) *flow {
	f := &flow{completer: startCompleter(t, db.Pool, 2)}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(flowEvery())
		defer tick.Stop()
		for n := 0; ; n++ {
			job := seed.Job{Name: fmt.Sprintf("flow-%05d", n), Show: "stress", Priority: int64(1 + n%100),
				MaxCores: 1_000_000}
			for i, tag := range flowTags {
				job.Layers = append(job.Layers, seed.Layer{Name: fmt.Sprintf("l%02d", i), Frames: 1, Cores: 100,
					Mem: seed.GB, Tags: tag})
			}
			if _, err := s.Launch(ctx, job); err != nil {
				if ctx.Err() == nil && !isCtxErr(err) {
					f.mu.Lock()
					f.err = err
					f.mu.Unlock()
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(f.stopFlow)
	return f
}

// flowEvery is how often the flow launches a job: every 100 ms under make
// chaos and make bench, every 250 ms in the default suite, where the flow's
// writes and the bookings and completions they bring are most of what these
// tests cost the server, and a job every 250 ms still keeps every cluster
// booking within a round of a takeover.
func flowEvery() time.Duration {
	if benchOn() || os.Getenv("CUESCHED_CHAOS") == "1" {
		return 100 * time.Millisecond
	}
	return 250 * time.Millisecond
}

func (f *flow) stopFlow() {
	f.cancel()
	f.wg.Wait()
	f.completer.stop()
}

func (f *flow) check(t *testing.T) {
	t.Helper()
	f.completer.check(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatalf("launching jobs: %v", f.err)
	}
}

// settled reports whether insts own every cluster once (ownedOnce) and each
// owns at least one: a joining instance has had its share.
func settled(t *testing.T, db *pgtest.DB, insts ...*instance) bool {
	t.Helper()
	if ok, _ := ownedOnce(t, db.Pool, insts...); !ok {
		return false
	}
	_, clusters := loads(t, db.Pool, insts...)
	for _, n := range clusters {
		if n == 0 {
			return false
		}
	}
	return true
}

// leaderApp is the application_name of the instance that leads (holds the
// ownership lock's key 0).
func leaderApp(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	var app string
	err := db.Pool.QueryRow(t.Context(), `SELECT coalesce(max(a.application_name), '') FROM pg_locks l
		JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = 0 AND l.objsubid = 2 AND l.granted
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(cluster.OwnershipLock)).Scan(&app)
	if err != nil {
		t.Fatalf("read the leader: %v", err)
	}
	return app
}

// workClusters are the ids of the clusters inst owns that have pending work.
func workClusters(t *testing.T, db *pgtest.DB, inst *instance) []int32 {
	t.Helper()
	id := inst.registration(t, db.Pool)
	pending := pendingLayers(t, db.Pool)
	var out []int32
	for _, c := range readClusters(t, db.Pool) {
		if c.Owner == id && id != 0 && pending[c.Key] > 0 {
			out = append(out, c.ID)
		}
	}
	return out
}

// pickVictim chooses the leader (or a follower) among insts, one that owns
// clusters with pending work, and returns it with those clusters; nil when
// no instance owns pending work at this moment (the flow's frames are all
// booked between two launches).
func pickVictim(t *testing.T, db *pgtest.DB, insts []*instance, leader bool) (*instance, []int32) {
	t.Helper()
	lead := leaderApp(t, db)
	var fallback *instance
	var fallbackWork []int32
	for _, i := range insts {
		w := workClusters(t, db, i)
		if len(w) == 0 {
			continue
		}
		if (i.app == lead) == leader {
			return i, w
		}
		fallback, fallbackWork = i, w
	}
	return fallback, fallbackWork
}

// firstBookings is, per cluster of ids, the first booking after since by
// an instance other than app (nil when some cluster has none yet).
func firstBookings(t *testing.T, db *pgtest.DB, ids []int32, since time.Time, app string) []time.Time {
	t.Helper()
	if len(ids) == 0 {
		return []time.Time{} // nothing to wait for, which is not "none yet"
	}
	rows, err := db.Pool.Query(t.Context(), `SELECT min(at) FROM e2e.booking
		WHERE cluster_id = ANY($1) AND at > $2 AND app <> $3 GROUP BY cluster_id`, ids, since, app)
	if err != nil {
		t.Fatalf("read bookings: %v", err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			t.Fatalf("read bookings: %v", err)
		}
		out = append(out, at)
	}
	if len(out) < len(ids) {
		return nil
	}
	return out
}

// kill -9 of one of three instances while they book: the clusters it owned
// are owned again and booking (a booking by another instance in every one
// of them that had work) within seconds. The time from the kill to the last
// of those first bookings is measured per trial: 3 trials in the default
// suite, 20 with CUESCHED_BENCH=1 (p50 and p99 logged; target p99 under
// 3 s). Trials alternate between killing the leader and a follower. No
// frame is booked twice, no booking commits outside its owner, and the
// audit is clean.
func TestTakeoverAfterKill(t *testing.T) {
	trials := 3
	if benchOn() {
		trials = 20
	}
	t.Parallel()
	db := ownDB(t)
	s := flowFarm(t, db, 48)
	recordBookings(t, db.Pool)
	seq := 0
	start := func() *instance {
		seq++
		return startInstance(t, db, fmt.Sprintf("kill-%d", seq), "--lease", "2s")
	}
	insts := []*instance{start(), start(), start()}
	fl := startFlow(t, db, s)

	var took []time.Duration
	for trial := range trials {
		var victim *instance
		var work []int32
		waitFor(t, time.Minute, "three instances sharing every cluster, one owning pending work", func() bool {
			if !settled(t, db, insts...) {
				return false
			}
			victim, work = pickVictim(t, db, insts, trial%2 == 0)
			return victim != nil
		}, insts...)
		wasLeader := victim.app == leaderApp(t, db)
		rest := slices.DeleteFunc(slices.Clone(insts), func(i *instance) bool { return i == victim })
		t0 := time.Now()
		victim.signal(syscall.SIGKILL)
		t.Logf("trial %d: %s killed at %s", trial, victim.name, t0.UTC().Format("15:04:05.000"))
		var owned time.Time
		var firsts []time.Time
		waitFor(t, 30*time.Second, "the killed instance's clusters owned again and booking", func() bool {
			if owned.IsZero() {
				if ok, _ := ownedOnce(t, db.Pool, rest...); ok {
					owned = time.Now()
				}
			}
			firsts = firstBookings(t, db, work, t0, victim.app)
			return !owned.IsZero() && firsts != nil
		}, rest...)
		last := owned
		for _, at := range firsts {
			if at.After(last) {
				last = at
			}
		}
		took = append(took, last.Sub(t0))
		t.Logf("trial %d: killed %s (leader %v, %d clusters with work): owned again after %v, booking in all after %v",
			trial, victim.name, wasLeader, len(work), owned.Sub(t0).Round(time.Millisecond),
			last.Sub(t0).Round(time.Millisecond))
		<-victim.done
		fl.check(t)
		insts = append(rest, start())
	}
	slices.Sort(took)
	t.Logf("takeover after kill -9 over %d trials: p50 %v, p99 %v, max %v", len(took),
		percentile(took, 0.50).Round(time.Millisecond), percentile(took, 0.99).Round(time.Millisecond),
		took[len(took)-1].Round(time.Millisecond))
	if benchOn() && percentile(took, 0.99) >= 3*time.Second {
		t.Errorf("takeover p99 %v, target within 3s", percentile(took, 0.99))
	}

	// The last instance started is up before all stop (SIGTERM while
	// running is the case tested).
	waitFor(t, time.Minute, "three instances sharing every cluster", func() bool {
		return settled(t, db, insts...)
	}, insts...)
	finishFlow(t, db, fl, insts)
}

// SIGSTOP of one of three instances for longer than its lease: the others
// end its sessions and take its clusters; after SIGCONT it registers again
// and commits nothing in a cluster it does not own (every recorded booking
// of the whole run names its cluster's owner at commit), while work keeps
// flowing and the woken instance has every chance to book.
func TestStoppedInstanceCommitsNothing(t *testing.T) {
	t.Parallel()
	db := ownDB(t)
	s := flowFarm(t, db, 48)
	recordBookings(t, db.Pool)
	var insts []*instance
	for i := range 3 {
		insts = append(insts, startInstance(t, db, fmt.Sprintf("stop-%d", i+1), "--lease", "2s"))
	}
	fl := startFlow(t, db, s)
	var victim *instance
	waitFor(t, time.Minute, "three instances sharing every cluster, one owning pending work", func() bool {
		if !settled(t, db, insts...) {
			return false
		}
		victim, _ = pickVictim(t, db, insts, false)
		return victim != nil
	}, insts...)
	waitFor(t, 30*time.Second, victim.name+" booking", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1`, victim.app) >= 20
	}, insts...)
	waitFor(t, time.Minute, "three instances sharing every cluster", func() bool {
		return settled(t, db, insts...)
	}, insts...)
	work := workClusters(t, db, victim)
	oldID := victim.registration(t, db.Pool)
	var owned []int32
	for _, c := range readClusters(t, db.Pool) {
		if c.Owner == oldID {
			owned = append(owned, c.ID)
		}
	}
	before := count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1`, victim.app)

	victim.signal(syscall.SIGSTOP)
	stopped := time.Now()
	rest := slices.DeleteFunc(slices.Clone(insts), func(i *instance) bool { return i == victim })
	waitFor(t, 30*time.Second, "the stopped instance's clusters owned by the others", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM cuesched.cluster WHERE id = ANY($1) AND owner IS DISTINCT FROM $2
			AND owner IN (SELECT id FROM cuesched.instance WHERE app_name = ANY($3))`,
			owned, oldID, []string{rest[0].app, rest[1].app}) == int64(len(owned)) &&
			firstBookings(t, db, work, stopped, victim.app) != nil
	}, rest...)
	t.Logf("%s stopped: its %d clusters (%d with work) moved and booking after %v", victim.name, len(owned),
		len(work), time.Since(stopped).Round(time.Millisecond))

	victim.signal(syscall.SIGCONT)
	woke := time.Now()
	waitFor(t, 30*time.Second, "the woken instance registered again", func() bool {
		id := victim.registration(t, db.Pool)
		return id != 0 && id != oldID
	}, insts...)
	// Let work flow past the wake, with the woken instance running: it has
	// every chance to commit with what it planned before it stopped: a few
	// seconds of the flow's bookings (11 a job).
	mark := count(t, db.Pool, `SELECT count(*) FROM e2e.booking`)
	// A wait, not a measure: a loaded machine books them slowly.
	waitFor(t, 2*time.Minute, "more bookings after the wake", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM e2e.booking`) > mark+int64(30*time.Second/flowEvery())
	}, insts...)
	after := count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1 AND at > $2`, victim.app, woke)
	inOld := count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1 AND at > $2 AND cluster_id = ANY($3)`,
		victim.app, woke, owned)
	t.Logf("%s booked %d frames before SIGSTOP, %d after SIGCONT (%d of them in its old clusters, owned again)",
		victim.name, before, after, inOld)
	if n := count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1 AND at > $2 AND at < $3`,
		victim.app, stopped.Add(time.Second), woke); n > 0 {
		t.Errorf("%d bookings recorded for %s while it was stopped", n, victim.name)
	}
	finishFlow(t, db, fl, insts)
}

// finishFlow stops the flow of work and checks the end of a run: the flow's
// own checks, every booking by its cluster's owner, the audit clean with the
// instances running (they bring the counters back after the last releases)
// and again once each has stopped cleanly.
func finishFlow(t *testing.T, db *pgtest.DB, fl *flow, insts []*instance) {
	t.Helper()
	fl.stopFlow()
	fl.check(t)
	checkBookings(t, db.Pool)
	auditClean(t, db.Pool)
	for _, i := range insts {
		i.stop(t)
	}
	auditClean(t, db.Pool)
}
