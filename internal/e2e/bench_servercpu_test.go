package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// TestBenchServerCPU measures what cuesched instances cost the PostgreSQL
// server beside a Cuebot-style write load: on the peer stress farm, fully
// booked, a load of Cuebot's release transactions at a fixed rate (three
// retries, which the instances book again, to one success) runs for a
// fixed window while the CPU time of every process of the server is read
// from /proc, walsenders (one per instance, each decoding the whole stream)
// apart from the rest (backends and auxiliary processes). Once with 1
// instance, once with 3 (normal build, --dry-run). No target: the figures
// go to BENCHMARKS.md. Run it with
//
//	CUESCHED_BENCH=1 go test -count=1 -v -timeout 30m -run TestBenchServerCPU ./internal/e2e
func TestBenchServerCPU(t *testing.T) {
	if !benchOn() {
		t.Skip("set CUESCHED_BENCH=1 to run the server CPU benchmark")
	}
	const (
		window = 20 * time.Second
		rate   = 100 // release operations a second
	)
	bin := normalBinary(t)
	tpl, admin := benchTemplate(t, seed.PeerStress(11), 11)
	total := count(t, tpl.Pool, `SELECT count(*) FROM frame WHERE str_state = 'WAITING'`)
	// Held back until the instances have split the clusters: instances that
	// join while others book pack the farm differently, and some frames may
	// then find no room.
	exec1(t, tpl.Pool, `UPDATE show SET b_scheduler_managed = false`)
	tpl.Pool.Close() // a template must have no sessions
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-instances", n), func(t *testing.T) {
			db := cloneDB(t, admin, tpl, fmt.Sprintf("cpu%d", n))
			var insts []*instance
			for i := range n {
				insts = append(insts, startBinary(t, bin, db.DSN, fmt.Sprintf("cpu-%d", i+1)))
			}
			waitFor(t, 5*time.Minute, "the instances sharing every cluster", func() bool {
				return settled(t, db, insts...)
			}, insts...)
			exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true`)
			waitFor(t, 5*time.Minute, "every frame booked", func() bool {
				return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) == total
			}, insts...)

			postmaster := postmasterPID(t, db.Pool)
			// Each session waits on its commits: eight keep the rate.
			load := startReleases(t, db.Pool, releaseOptions{workers: 8, rate: rate, retries: true})
			// The load's own first round trips are not the window's.
			waitFor(t, time.Minute, "the load under way", func() bool { return load.released() > 0 })
			kinds := serverProcesses(t, db.Pool)
			// Which statements the time goes to (the whole server's: only
			// this test runs on it now).
			exec1(t, db.Pool, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
			exec1(t, db.Pool, `SELECT pg_stat_statements_reset()`)
			before, began := serverCPU(postmaster), time.Now()
			var instBefore []time.Duration
			for _, i := range insts {
				instBefore = append(instBefore, cpuTime(t, i.cmd.Process.Pid))
			}
			opsBefore := load.released()
			<-time.After(window) // the measurement window itself, not a wait for an event
			after, elapsed := serverCPU(postmaster), time.Since(began)
			ops := load.released() - opsBefore
			var instUsed time.Duration
			for k, i := range insts {
				instUsed += cpuTime(t, i.cmd.Process.Pid) - instBefore[k]
			}
			for pid, kind := range serverProcesses(t, db.Pool) {
				if _, ok := kinds[pid]; !ok {
					kinds[pid] = kind
				}
			}
			load.stop()
			load.check(t)
			logTopStatements(t, db.Pool, 5)

			used := map[string]time.Duration{}
			var all time.Duration
			walsenders := 0
			for pid, ticks := range after {
				d := ticks - before[pid] // a process started in the window counts from 0
				kind := kinds[pid]
				if kind == "" {
					kind = kindOther
				}
				used[kind] += d
				all += d
			}
			for _, kind := range kinds {
				if kind == kindWalsender {
					walsenders++
				}
			}
			secs := elapsed.Seconds()
			perSec := func(d time.Duration) float64 { return d.Seconds() / secs }
			// The load's rate depends on the machine: per operation, the two
			// instance counts compare even when their rates differ.
			t.Logf("%d instance(s), %.0f release operations/s for %v: server CPU %.1f ms per operation; "+
				"cuesched's sessions %.1f ms and the walsenders %.2f ms per operation", n, float64(ops)/secs,
				elapsed.Round(time.Millisecond), 1000*all.Seconds()/float64(max(ops, 1)),
				1000*used[kindCuesched].Seconds()/float64(max(ops, 1)), 1000*used[kindWalsender].Seconds()/float64(max(ops, 1)))
			t.Logf("%d instance(s), %.0f release operations/s for %v: server CPU %.3f s/s, %.3f s/s per instance; "+
				"walsenders %.3f s/s (%.3f each), cuesched's sessions %.3f s/s, the load's sessions %.3f s/s, "+
				"the server's own processes (autovacuum, checkpointer, WAL writer...) %.3f s/s; the instances' own "+
				"CPU %.3f s/s", n, float64(ops)/secs, elapsed.Round(time.Millisecond), perSec(all),
				perSec(all)/float64(n), perSec(used[kindWalsender]), perSec(used[kindWalsender])/float64(max(walsenders, 1)),
				perSec(used[kindCuesched]), perSec(used[kindClient]), perSec(used[kindOther]), perSec(instUsed))
			if walsenders != n {
				t.Errorf("%d walsenders for %d instances", walsenders, n)
			}
			// Counters of managed shows come back to SUM(proc) when their
			// owner recomputes them after releases: audit before stopping.
			auditClean(t, db.Pool)
			for _, i := range insts {
				i.stop(t)
			}
		})
	}
}

// The kinds of server process the CPU is split by.
const (
	kindWalsender = "walsender"
	kindCuesched  = "cuesched"
	kindClient    = "client"
	kindOther     = "other"
)

// serverProcesses is the kind of each process pg_stat_activity lists, by
// pid: walsenders, cuesched's sessions (by application_name), other client
// sessions (the load and the test), and the server's own processes.
func serverProcesses(t *testing.T, pool *pgxpool.Pool) map[int]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT pid, CASE
			WHEN backend_type = 'walsender' THEN $1
			WHEN backend_type = 'client backend' AND application_name LIKE 'cuesched/%' THEN $2
			WHEN backend_type = 'client backend' THEN $3
			ELSE $4 END
		FROM pg_stat_activity`, kindWalsender, kindCuesched, kindClient, kindOther)
	if err != nil {
		t.Fatalf("read server processes: %v", err)
	}
	out := map[int]string{}
	for rows.Next() {
		var pid int
		var kind string
		if err := rows.Scan(&pid, &kind); err != nil {
			t.Fatalf("read server processes: %v", err)
		}
		out[pid] = kind
	}
	rows.Close()
	return out
}

// logTopStatements logs the n statements of the test's database that took
// the most execution time since pg_stat_statements was last reset.
func logTopStatements(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT calls, total_exec_time, rows, query FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		t.Fatalf("read pg_stat_statements: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var calls, n int64
		var ms float64
		var query string
		if err := rows.Scan(&calls, &ms, &n, &query); err != nil {
			t.Fatalf("read pg_stat_statements: %v", err)
		}
		query = strings.Join(strings.Fields(query), " ")
		t.Logf("  %8.0f ms in %6d calls, %7d rows: %.110s", ms, calls, n, query)
	}
}

// postmasterPID is the parent of pool's backends.
func postmasterPID(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var backend int
	if err := pool.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatalf("read a backend's pid: %v", err)
	}
	fields, err := procStat(backend)
	if err != nil {
		t.Fatalf("read the postmaster's pid: %v", err)
	}
	ppid, err := strconv.Atoi(fields[1]) // field 4, ppid
	if err != nil {
		t.Fatalf("read the postmaster's pid: %q: %v", fields[1], err)
	}
	return ppid
}

// serverCPU is the CPU time (user plus system) used so far by each child of
// the postmaster, by pid. A process that ends between two readings is
// missing from the second: the server's sessions here are pooled.
func serverCPU(postmaster int) map[int]time.Duration {
	out := map[int]time.Duration{}
	entries, _ := os.ReadDir("/proc") // a failure leaves the reading empty, and the figures say so
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fields, err := procStat(pid)
		if err != nil || fields[1] != strconv.Itoa(postmaster) {
			continue // not a server process, or one that just ended
		}
		if d, err := statCPU(fields); err == nil {
			out[pid] = d
		}
	}
	return out
}

// statCPU is the user plus system CPU time in procStat's fields (utime and
// stime, fields 14 and 15, in clock ticks of 1/100 s, Linux's USER_HZ).
func statCPU(fields []string) (time.Duration, error) {
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// procStat is /proc/PID/stat's fields from the state on (field 3): the
// command name may hold spaces.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(fields))
	}
	return fields, nil
}
