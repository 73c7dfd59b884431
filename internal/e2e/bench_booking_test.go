package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/internal/writefloor"
	"github.com/cuesched/cuesched/match"
)

// TestBenchEndToEndBooking compares a whole `cuesched run` process (the
// normal build, --dry-run) booking the peer stress farm with the write floor
// (DESIGN.md) measured in the same run; the target is a median ratio of at
// least 0.85. Each round books one fresh copy of a seeded template with the
// process, timed from the commit that hands the show to the scheduler (the
// process has registered and owns every cluster by then) to the last
// booking's commit, both read from the server's commit timestamps (logging
// where the CPU and the statements' time went). The floor writes the
// placements (read back from proc) on other fresh copies, 500 frames a
// transaction, just before and just after the process books; the round's
// floor is their mean. Each round then says where the gap lies: the floor
// written beside an idle instance (its walsender and replica share the
// machine with the writes), and the booking's own transactions alone beside
// one (transactionsBooking).
// Run it with
//
//	CUESCHED_BENCH=1 go test -count=1 -v -timeout 30m -run TestBenchEndToEndBooking ./internal/e2e
//
// (CUESCHED_BENCH_ROUNDS sets the rounds, default 3; CUESCHED_BENCH_BINS="A B"
// has rounds take the binaries A and B in turn, to compare two builds in one
// run.)
func TestBenchEndToEndBooking(t *testing.T) {
	if !benchOn() {
		t.Skip("set CUESCHED_BENCH=1 to run the end-to-end booking benchmark")
	}
	rounds := benchRounds()
	bin := normalBinary(t)
	tpl, admin := benchTemplate(t, seed.PeerStress(11), 11)
	total := count(t, tpl.Pool, `SELECT count(*) FROM frame WHERE str_state = 'WAITING'`)
	// Cuebot's own booking would skip a managed show; the scheduler must not
	// see the work before the timed release.
	exec1(t, tpl.Pool, `UPDATE show SET b_scheduler_managed = false`)
	tpl.Pool.Close() // a template must have no sessions

	var ratios, besides, alone []float64
	var placements []match.Placement
	for r := range rounds {
		// CUESCHED_BENCH_BINS (binaries, space-separated) compares builds
		// in one run, rounds taking them in turn.
		bn := bin
		if bs := strings.Fields(os.Getenv("CUESCHED_BENCH_BINS")); len(bs) > 0 {
			bn = bs[r%len(bs)]
			t.Logf("round %d: %s", r+1, bn)
		}
		floor := func(i int) time.Duration {
			return floorBooking(t, "", cloneDB(t, admin, tpl, fmt.Sprintf("r%df%d", r, i)), placements)
		}
		// The floor is written just before and just after the process
		// books, and their mean taken: this machine's speed drifts by
		// 10-20% over seconds, and the bracket cancels a steady drift. The
		// first round has no placements before its process has booked, so
		// it writes both after.
		first := placements == nil
		var before time.Duration
		if !first {
			before = floor(0)
		}
		b := processBooking(t, bn, cloneDB(t, admin, tpl, fmt.Sprintf("r%dp", r)), total)
		placements = b.placements
		after := floor(1)
		if first {
			before = floor(0)
		}
		fl := (before + after) / 2
		ratio := fl.Seconds() / b.took.Seconds()
		ratios = append(ratios, ratio)
		// Where the gap lies: the same writes and the booking's own
		// transactions, each beside an idle instance.
		beside := floorBooking(t, bn, cloneDB(t, admin, tpl, fmt.Sprintf("r%di", r)), placements)
		txs := transactionsBooking(t, bn, cloneDB(t, admin, tpl, fmt.Sprintf("r%dt", r)), placements)
		besides, alone = append(besides, fl.Seconds()/beside.Seconds()), append(alone, fl.Seconds()/txs.Seconds())
		t.Logf("round %d: cuesched run %v (%.0f frames/s), floor %v and %v (%.0f frames/s): ratio %.2f; beside an "+
			"idle instance the floor took %v (%.2f), the booking transactions alone %v (%.2f)", r+1,
			b.took.Round(time.Millisecond), float64(total)/b.took.Seconds(), before.Round(time.Millisecond),
			after.Round(time.Millisecond), float64(total)/fl.Seconds(), ratio, beside.Round(time.Millisecond),
			besides[r], txs.Round(time.Millisecond), alone[r])
	}
	m := median(ratios)
	t.Logf("cuesched run / write floor (500 per transaction): %s (target: median >= 0.85)", summary(ratios))
	t.Logf("beside an idle instance, the floor / write floor: %s; the booking transactions alone / write floor: %s",
		summary(besides), summary(alone))
	if m < 0.85 {
		t.Errorf("cuesched run / write floor: median %.2f, below the target 0.85", m)
	}
}

// booking is what processBooking measured.
type booking struct {
	took       time.Duration // from the release until every frame ran
	placements []match.Placement
	// cpu is the CPU time the booking cost: the instance's, its database
	// sessions' and its walsender's.
	cpu time.Duration
}

// processBooking starts a normal-build instance on db, with the flags
// extra, the work held back, waits until it owns every cluster, hands the
// show over and times until every frame runs.
func processBooking(t *testing.T, bin string, db *pgtest.DB, total int64, extra ...string) booking {
	t.Helper()
	// The seeded hosts last pinged when the template was seeded, and an
	// instance offers no host silent for longer than its ping age (5
	// minutes): a long run stopped booking part way through its 16th round.
	// A farm's RQDs report all the time.
	exec1(t, db.Pool, `UPDATE host_stat SET ts_ping = now()`)
	inst := startBinary(t, bin, db.DSN, "e2e-bench", extra...)
	waitFor(t, 5*time.Minute, "the instance owning every cluster", func() bool {
		ok, _ := ownedOnce(t, db.Pool, inst)
		return ok
	}, inst)
	addr := inst.metricsAddr(t)
	exec1(t, db.Pool, `CHECKPOINT`) // the copy's writes are not the booking's to pay
	// Where the CPU goes while it books (the machine has 2 cores): the
	// instance, the server's sessions and the walsender decoding for it.
	postmaster := postmasterPID(t, db.Pool)
	kinds := serverProcesses(t, db.Pool)
	serverBefore, instBefore := serverCPU(postmaster), cpuTime(t, inst.cmd.Process.Pid)
	exec1(t, db.Pool, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	exec1(t, db.Pool, `SELECT pg_stat_statements_reset()`)
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true`)
	released := commitTime(t, db.Pool, `SELECT max(pg_xact_commit_timestamp(xmin)) FROM show`)
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	// The poll only says when to stop: the time is read from the commits.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// Cuebot's frame triggers keep job_stat's running count in the booking's
	// own transaction: 300 rows to add, where counting frames would cost the
	// 2-core machine more.
	for count(t, db.Pool, `SELECT coalesce(sum(int_running_count), 0) FROM job_stat`) != total {
		if inst.exited() {
			t.Fatalf("instance exited (%v) before booking every frame", inst.err)
		}
		if time.Now().After(deadline) {
			logWaiting(t, db.Pool)
			t.Fatalf("not every frame booked within 5 minutes of the release")
		}
		<-tick.C
	}
	seen := time.Since(start)
	serverAfter, instUsed := serverCPU(postmaster), cpuTime(t, inst.cmd.Process.Pid)-instBefore
	// In dry-run nothing writes a proc after its booking, so its xmin is the
	// booking transaction's.
	lastCommit := commitTime(t, db.Pool, `SELECT max(pg_xact_commit_timestamp(xmin)) FROM proc`)
	firstCommit := commitTime(t, db.Pool, `SELECT min(pg_xact_commit_timestamp(xmin)) FROM proc`)
	elapsed := lastCommit.Sub(released)
	for pid, kind := range serverProcesses(t, db.Pool) {
		if _, ok := kinds[pid]; !ok {
			kinds[pid] = kind
		}
	}
	server := map[string]time.Duration{}
	for pid, d := range serverAfter {
		kind := kinds[pid]
		if kind == "" {
			kind = kindOther
		}
		server[kind] += d - serverBefore[pid]
	}
	batches := scrapeSum(t, addr, "cuesched_dispatch_batch_size_count")
	t.Logf("cuesched run: every frame RUNNING %v after the release (commit to commit; the poll saw it after %v); "+
		"release to the first booking's commit %v, first to last booking commit %v; %v booking transactions, "+
		"%.0f placements each on average, %.1f ms each on average (begin to commit)", elapsed.Round(time.Millisecond),
		seen.Round(time.Millisecond), firstCommit.Sub(released).Round(time.Millisecond),
		lastCommit.Sub(firstCommit).Round(time.Millisecond), batches,
		scrapeSum(t, addr, "cuesched_dispatch_batch_size_sum")/batches,
		1000*scrapeSum(t, addr, "cuesched_dispatch_batch_duration_seconds_sum")/batches)
	t.Logf("CPU while it booked: the instance %v, its database sessions %v, its walsender %v, other sessions "+
		"(the poll) %v, the server's own processes %v", instUsed, server[kindCuesched], server[kindWalsender],
		server[kindClient], server[kindOther])
	logTopStatements(t, db.Pool, 8)
	ps := bookedPlacements(t, db.Pool)
	inst.stop(t)
	auditClean(t, db.Pool)
	return booking{took: elapsed, placements: ps, cpu: instUsed + server[kindCuesched] + server[kindWalsender]}
}

// floorBooking writes ps as the write floor on db, 500 frames a
// transaction, and returns the time it took. With bin set, an idle
// instance of that binary streams the database's changes meanwhile
// (idleBeside).
func floorBooking(t *testing.T, bin string, db *pgtest.DB, ps []match.Placement) time.Duration {
	t.Helper()
	// Managed as during the process's bookings, so the same triggers fire.
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true`)
	if bin != "" {
		defer idleBeside(t, bin, db)()
	}
	exec1(t, db.Pool, `CHECKPOINT`) // the copy's writes are not the floor's to pay
	start := time.Now()
	if err := writefloor.Write(t.Context(), db.Pool, ps, 500); err != nil {
		t.Fatalf("write floor: %v", err)
	}
	elapsed := time.Since(start)
	if n := count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`); n != int64(len(ps)) {
		t.Fatalf("write floor: %d frames RUNNING, want %d", n, len(ps))
	}
	audittest.Clean(t, db.Pool)
	return elapsed
}

// transactionsBooking books ps on db with dispatch.Booker alone (the
// booking transactions, with their locks, re-check and outbox, 500
// placements each, one after another) beside an idle instance of bin: what
// a `cuesched run` process pays before it matches a frame, reads the queue
// or waits for the work to be announced.
func transactionsBooking(t *testing.T, bin string, db *pgtest.DB, ps []match.Placement) time.Duration {
	t.Helper()
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true`)
	defer idleBeside(t, bin, db)()
	exec1(t, db.Pool, `CHECKPOINT`)
	b := dispatch.NewBooker(dispatch.BookerConfig{Pool: db.Pool, BatchMax: 500, DryRun: true,
		Logger: slog.New(slog.DiscardHandler)})
	start := time.Now()
	for i := 0; i < len(ps); i += 500 {
		chunk := ps[i:min(i+500, len(ps))]
		res, err := b.Book(t.Context(), dispatch.Cluster{ID: 1}, chunk)
		if err != nil || len(res.Booked) != len(chunk) {
			t.Fatalf("book placements %d-%d alone: %v; booked %d, dropped %+v, busy %v", i, i+len(chunk), err,
				len(res.Booked), res.Dropped, res.Busy)
		}
	}
	elapsed := time.Since(start)
	auditClean(t, db.Pool)
	return elapsed
}

// idleBeside starts an instance of bin on db that streams the database's
// changes into its replica, as every instance does, and books nothing (it
// books only facility "elsewhere", which has no hosts), waits until it
// streams, and returns the function that stops it.
func idleBeside(t *testing.T, bin string, db *pgtest.DB) (stop func()) {
	t.Helper()
	exec1(t, db.Pool, `INSERT INTO facility (pk_facility, str_name) VALUES ('00000000-0000-0000-0000-0000000000ff', 'elsewhere')`)
	inst := startBinary(t, bin, db.DSN, "e2e-idle", "--facility", "elsewhere")
	waitFor(t, 5*time.Minute, "the idle instance streaming", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'`) > 0
	}, inst)
	return func() {
		if inst.exited() {
			t.Fatalf("the idle instance exited (%v)", inst.err)
		}
		inst.stop(t)
	}
}

// commitTime is the time the query reads (a commit timestamp), which must
// not be NULL: the cluster must track commit timestamps.
func commitTime(t *testing.T, pool *pgxpool.Pool, sql string) time.Time {
	t.Helper()
	var ts *time.Time
	if err := pool.QueryRow(t.Context(), sql).Scan(&ts); err != nil {
		t.Fatalf("read a commit time: %v", err)
	}
	if ts == nil {
		t.Fatalf("no commit time (%s): the cluster needs track_commit_timestamp = on", sql)
	}
	return *ts
}

// bookedPlacements reads back what was booked on pool (frame, host, cores,
// memory, GPUs from proc), with what the floor's write set needs besides, in
// the order booked. Frame versions are those before the booking (a booking
// adds one), so the placements apply to a fresh copy of the same template.
func bookedPlacements(t *testing.T, pool *pgxpool.Pool) []match.Placement {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
		SELECT p.pk_frame, f.int_version - 1, p.pk_host, h.str_name, h.pk_alloc,
		       l.pk_layer, l.pk_job, j.pk_show, j.pk_folder, j.pk_dept,
		       p.int_cores_reserved, p.int_mem_reserved, p.int_gpus_reserved, p.int_gpu_mem_reserved
		  FROM proc p JOIN frame f USING (pk_frame) JOIN host h ON h.pk_host = p.pk_host
		  JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = l.pk_job
		 ORDER BY p.ts_booked, p.pk_frame`)
	if err != nil {
		t.Fatalf("read placements: %v", err)
	}
	defer rows.Close()
	var out []match.Placement
	for rows.Next() {
		var p match.Placement
		l := &match.Layer{}
		if err := rows.Scan(&p.Frame.ID, &p.Frame.Version, &p.Host.ID, &p.Host.Name, &p.Host.Alloc, &l.ID, &l.JobID,
			&l.ShowID, &l.FolderID, &l.DeptID, &p.Size.Cores, &p.Size.Mem, &p.Size.GPUs, &p.Size.GPUMem); err != nil {
			t.Fatalf("read placements: %v", err)
		}
		p.Layer = l
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read placements: %v", err)
	}
	return out
}

// benchTemplate is a database seeded with farm, to be cloned (close its pool
// first), and an admin connection to clone it with. It lives in a cluster of
// its own that stamps every commit with its time, so that processBooking
// times a booking by the server's clock from the release's commit to the
// last booking's, not by a poll sharing the 2-core machine with it.
func benchTemplate(t *testing.T, farm *seed.Farm, seedN uint64) (*pgtest.DB, *pgx.Conn) {
	t.Helper()
	c := pgtest.NewCluster(t, pgcluster.Options{Settings: map[string]string{"track_commit_timestamp": "on"}})
	tpl := pgtest.NewDBIn(t, c)
	if _, err := seed.Load(t.Context(), tpl.Pool, farm, seedN); err != nil {
		t.Fatal(err)
	}
	// The planner's statistics of a seeded farm, as autovacuum leaves them
	// and a studio's database has them: without this the copies planned
	// with the statistics of the empty schema, or of whatever autovacuum
	// had analyzed of the seed before the copy, and the queue's frame read
	// took 0.4-0.5 s of a 3-4 s booking where it takes 0.1 s.
	exec1(t, tpl.Pool, `ANALYZE`)
	admin, err := pgx.Connect(t.Context(), tpl.Cluster.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return tpl, admin
}

// cloneDB is a fresh copy of tpl, dropped when the test ends.
func cloneDB(t *testing.T, admin *pgx.Conn, tpl *pgtest.DB, suffix string) *pgtest.DB {
	t.Helper()
	name := tpl.Name + "_" + suffix
	if _, err := admin.Exec(t.Context(), fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tpl.Name)); err != nil {
		t.Fatalf("clone %s: %v", tpl.Name, err)
	}
	db := &pgtest.DB{Name: name, DSN: tpl.Cluster.DSN(name), URL: tpl.Cluster.URL(name), Cluster: tpl.Cluster}
	pool, err := pgxpool.New(t.Context(), db.DSN)
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	db.Pool = pool
	t.Cleanup(func() {
		pool.Close()
		if _, err := admin.Exec(context.Background(), fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name)); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	return db
}

// benchRounds is CUESCHED_BENCH_ROUNDS, default 3.
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("CUESCHED_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// summary is xs, two decimals each, and their median.
func summary(xs []float64) string {
	return fmt.Sprintf("%s, median %.2f", fmtRatios(xs), median(xs))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
