package e2e

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

var normal struct {
	once sync.Once
	path string
	err  error
}

// normalBinary is cuesched built without the race detector, which alone
// costs an idle process more CPU than the budget it is checked against.
func normalBinary(t *testing.T) string {
	t.Helper()
	if !raceChildren {
		return binary
	}
	normal.once.Do(func() { normal.path, normal.err = build("cuesched", "build") })
	if normal.err != nil {
		t.Fatal(normal.err)
	}
	return normal.path
}

// allAsleep reports whether every cluster the instance owns sleeps until
// woken: it has nothing left to book.
func allAsleep(t *testing.T, i *instance) bool {
	t.Helper()
	addr := i.metricsAddr(t)
	owned := scrapeSum(t, addr, "cuesched_clusters_owned")
	return owned > 0 && scrapeSum(t, addr, "cuesched_clusters_asleep") == owned
}

// sleepers says how many of the clusters an instance owns sleep, for a
// failure's message.
func sleepers(t *testing.T, i *instance) string {
	t.Helper()
	addr := i.metricsAddr(t)
	return fmt.Sprintf("%v of %v clusters asleep", scrapeSum(t, addr, "cuesched_clusters_asleep"),
		scrapeSum(t, addr, "cuesched_clusters_owned"))
}

// cpuTime is the user plus system CPU time a process has used so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	fields, err := procStat(pid)
	if err == nil {
		var d time.Duration
		if d, err = statCPU(fields); err == nil {
			return d
		}
	}
	t.Fatalf("read CPU time of process %d: %v", pid, err)
	return 0
}

// An idle instance uses almost no CPU, also after ownership has changed
// (issue 11, defect 1: the loop once spun after the first change). Two
// instances book the stress farm (seed.SuiteStress) to the full (one hands
// clusters to the other as it joins); one is killed and the other takes its clusters
// over; then the survivor, with nothing left to book, must use under 0.2 s
// of CPU in 10 s. With CUESCHED_BENCH=1 the same runs on a farm of 10,000
// hosts too (BENCHMARKS.md gives both figures).
func TestIdleCPU(t *testing.T) {
	hosts := []int{len(peerStressFarm.Hosts)}
	if benchOn() {
		hosts = append(hosts, 10000)
	}
	t.Parallel()
	for _, n := range hosts {
		t.Run(fmt.Sprintf("%d-hosts", n), func(t *testing.T) {
			if n == len(peerStressFarm.Hosts) {
				db, farm, _ := peerStressDB(t)
				idleCPU(t, db, farm)
				return
			}
			// The peer stress farm's five frames a host.
			farm := seed.Stress(11, n, n/4)
			db := ownDB(t)
			if _, err := seed.Load(t.Context(), db.Pool, farm, 11); err != nil {
				t.Fatal(err)
			}
			idleCPU(t, db, farm)
		})
	}
}

func idleCPU(t *testing.T, db *pgtest.DB, farm *seed.Farm) {
	window, budget := 10*time.Second, 200*time.Millisecond
	bin := normalBinary(t)
	total := int64(farm.FrameCount())
	a := startBinary(t, bin, db.DSN, "cpu-a", "--lease", "2s")
	b := startBinary(t, bin, db.DSN, "cpu-b", "--lease", "2s")
	waitFor(t, 5*time.Minute, "both instances sharing every cluster", func() bool {
		return settled(t, db, a, b)
	}, a, b)
	// Fully booked: every cluster of both instances asleep, with nothing
	// left that fits (on the 10,000-host farm a few frames may find no
	// room: nothing ever finishes here).
	running := func() int64 { return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) }
	var seen string // what the wait saw last, for its failure
	t.Cleanup(func() {
		if t.Failed() && seen != "" {
			t.Logf("last seen: %s", seen)
		}
	})
	waitFor(t, 5*time.Minute, "every cluster asleep, nothing left that fits", func() bool {
		asleepA, asleepB, n := allAsleep(t, a), allAsleep(t, b), running()
		seen = fmt.Sprintf("%s: %s; %s: %s; %d of %d frames running", a.name, sleepers(t, a), b.name, sleepers(t, b), n, total)
		return asleepA && asleepB && (n == total || farm != peerStressFarm)
	}, a, b)
	b.signal(syscall.SIGKILL)
	<-b.done
	waitFor(t, time.Minute, "the survivor owning every cluster", func() bool {
		ok, _ := ownedOnce(t, db.Pool, a)
		return ok
	}, a)
	waitFor(t, time.Minute, "the survivor's clusters asleep", func() bool { return allAsleep(t, a) }, a)
	t.Logf("%d of %d frames running", running(), total)

	pid := a.cmd.Process.Pid
	before := cpuTime(t, pid)
	began := time.Now()
	<-time.After(window) // the measurement window itself, not a wait for an event
	used, elapsed := cpuTime(t, pid)-before, time.Since(began)
	t.Logf("idle after a handover and a takeover, %d hosts: %v of CPU in %v", len(farm.Hosts), used,
		elapsed.Round(time.Millisecond))
	if used >= budget {
		t.Errorf("the idle instance used %v of CPU in %v, budget %v", used, elapsed.Round(time.Millisecond), budget)
	}
	a.stop(t)
	auditClean(t, db.Pool)
}
