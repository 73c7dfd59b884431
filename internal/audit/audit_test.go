package audit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func run(t *testing.T, db *pgtest.DB, opts audit.Options) []audit.Violation {
	t.Helper()
	vs, err := audit.Run(context.Background(), db.Pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// The stress farm the suites book (seed.SuiteStress: the peer stress farm
// under make chaos and make bench) is seeded whole and clean.
func TestPeerStressFarmIsClean(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	f := seed.SuiteStress(7)
	s, err := seed.Load(t.Context(), db.Pool, f, 7)
	if err != nil {
		t.Fatal(err)
	}
	var hosts, frames, waiting int
	if err := db.Pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM host), (SELECT count(*) FROM frame),
		(SELECT sum(int_waiting_count) FROM layer_stat)`).Scan(&hosts, &frames, &waiting); err != nil {
		t.Fatal(err)
	}
	wantHosts, wantFrames, wantJobs := 300, 1500, 75
	if seed.FullSize() {
		wantHosts, wantFrames, wantJobs = 1200, 6000, 300
	}
	if hosts != wantHosts || frames != wantFrames || waiting != wantFrames || len(s.Jobs) != wantJobs {
		t.Fatalf("stress farm has %d hosts, %d frames (%d waiting), %d jobs; want %d, %d, %d, %d",
			hosts, frames, waiting, len(s.Jobs), wantHosts, wantFrames, wantFrames, wantJobs)
	}
	if vs := run(t, db, audit.Options{}); len(vs) != 0 {
		t.Fatal(audit.Summary(vs))
	}
}

// bookedFarm has one managed show with three frames booked Cuebot-style on
// two hosts; the audit is clean before a test corrupts it.
func bookedFarm(t *testing.T) (*pgtest.DB, *seed.Seeded, []string) {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Full)
	f := &seed.Farm{
		Hosts: []seed.Host{
			{Name: "a", Alloc: "local.general", Cores: 800, Mem: 16 * seed.GB},
			{Name: "b", Alloc: "local.general", Cores: 800, Mem: 16 * seed.GB},
		},
		Shows: []seed.Show{{Name: "audit", Managed: true,
			Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 1000, Burst: 1000}}}},
		Limits: []seed.Limit{{Name: "lic", Max: 3}},
		Jobs: []seed.Job{{Name: "audit-job", Show: "audit", Layers: []seed.Layer{
			{Name: "l", Frames: 5, Cores: 100, Mem: seed.GB, Limits: []string{"lic"}},
		}}},
	}
	s, err := seed.Load(t.Context(), db.Pool, f, 3)
	if err != nil {
		t.Fatal(err)
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	var frames []string
	for i, host := range []string{"a", "a", "b"} {
		frame := s.Jobs["audit-job"].Frames[[]string{"0001-l", "0002-l", "0003-l"}[i]]
		if _, err := sim.Book(t.Context(), frame, s.Hosts[host], 200, 2*seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame)
	}
	if vs := run(t, db, audit.Options{}); len(vs) != 0 {
		t.Fatalf("booked farm not clean: %s", audit.Summary(vs))
	}
	return db, s, frames
}

func exec(t *testing.T, db *pgtest.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// wantExactly checks the findings' checks, keys and kinds (Illegal when
// want leaves it empty).
func wantExactly(t *testing.T, vs []audit.Violation, want ...audit.Violation) {
	t.Helper()
	if len(vs) != len(want) {
		t.Fatalf("got %s, want %d findings %v", audit.Summary(vs), len(want), want)
	}
	for i, w := range want {
		if w.Kind == "" {
			w.Kind = audit.Illegal
		}
		if vs[i].Check != w.Check || vs[i].Key != w.Key || vs[i].Kind != w.Kind {
			t.Errorf("finding %d: got %s, want check %s on key %s, %s", i, vs[i], w.Check, w.Key, w.Kind)
		}
	}
}

func TestAuditNamesCorruptedHost(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	// The guard trigger refuses negative idle; an idle count that disagrees
	// with the procs is the corruption a wrong booking would leave.
	exec(t, db, `UPDATE host SET int_cores_idle = int_cores_idle - 100 WHERE pk_host = $1`, s.Hosts["b"])
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "host-reserved", Key: s.Hosts["b"]})
}

func TestAuditNamesCorruptedCounter(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	job := s.Jobs["audit-job"].ID
	exec(t, db, `UPDATE job_resource SET int_cores = int_cores + 100 WHERE pk_job = $1`, job)
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "counter-job", Key: job})
}

func TestAuditNamesBrokenFrameProcPair(t *testing.T) {
	t.Parallel()
	db, _, frames := bookedFarm(t)
	// The frame claims a host its proc is not on.
	exec(t, db, `UPDATE frame SET str_host = 'b' WHERE pk_frame = $1`, frames[0])
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "running-frame-proc", Key: frames[0]})
}

// A limit lowered under what runs leaves it over, legally; a frame booked
// after the change above it is illegal, and so is the whole breach then.
func TestAuditTellsALoweredLimitFromABookingAboveIt(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	lim := s.Limits["lic"]
	exec(t, db, `UPDATE limit_record SET int_max_value = 2 WHERE pk_limit_record = $1`, lim)
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "cap-limit", Key: lim, Kind: audit.LeftLegal})
	if vs := run(t, db, audit.Options{SkipCaps: true}); len(vs) != 0 {
		t.Errorf("with caps skipped: %s", audit.Summary(vs))
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	if _, err := sim.Book(t.Context(), s.Jobs["audit-job"].Frames["0004-l"], s.Hosts["b"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "cap-limit", Key: lim})
}

// The same for a show's burst and a job's maximum, lowered by Cuebot (or an
// operator) under its running frames: left legal, with the reason.
func TestAuditLeavesLoweredCapsLegal(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	job := s.Jobs["audit-job"].ID
	var sub string
	if err := db.Pool.QueryRow(t.Context(), `SELECT pk_subscription FROM subscription WHERE pk_show = $1`,
		s.Shows["audit"]).Scan(&sub); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `UPDATE subscription SET int_burst = 500 WHERE pk_subscription = $1`, sub)
	exec(t, db, `UPDATE job_resource SET int_max_cores = 400 WHERE pk_job = $1`, job)
	vs := run(t, db, audit.Options{})
	wantExactly(t, vs, audit.Violation{Check: "cap-burst", Key: sub, Kind: audit.LeftLegal},
		audit.Violation{Check: "cap-job", Key: job, Kind: audit.LeftLegal})
	if !strings.Contains(vs[0].Detail, "every one booked before the change at") {
		t.Errorf("detail %q does not say why", vs[0].Detail)
	}
	if ill := audit.Illegals(vs); len(ill) != 0 {
		t.Errorf("illegal: %s", audit.Summary(ill))
	}
}

// A host moved to another allocation with its frames running takes them
// over that allocation's burst: left legal.
func TestAuditLeavesAMovedHostLegal(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	exec(t, db, `INSERT INTO alloc (pk_alloc, str_name, pk_facility, str_tag)
		SELECT 'audit-small', 'local.small', pk_facility, 'small' FROM alloc WHERE pk_alloc = $1`, s.Allocs["local.general"])
	exec(t, db, `INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst)
		VALUES ('audit-small-sub', 'audit-small', $1, 0, 100)`, s.Shows["audit"])
	exec(t, db, `UPDATE host SET pk_alloc = 'audit-small' WHERE pk_host = $1`, s.Hosts["a"])
	vs, err := audit.Run(t.Context(), db.Pool, audit.Options{SkipCounters: true})
	if err != nil {
		t.Fatal(err)
	}
	wantExactly(t, vs, audit.Violation{Check: "cap-burst", Key: "audit-small-sub", Kind: audit.LeftLegal})
}

// A show handed back with frames running leaves their procs legal; a proc
// booked for it after is illegal. Beside Cuebot (AllowUnmanaged) only
// cuesched's procs (those with an outbox row) are checked.
func TestAuditTellsAReleasedShowsProcsFromBookingsAfter(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	outbox(t, db, "launched", 0)
	exec(t, db, `UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1`, s.Shows["audit"])
	vs := run(t, db, audit.Options{})
	if len(vs) != 3 {
		t.Fatalf("got %s, want the 3 procs of the now unmanaged show", audit.Summary(vs))
	}
	for _, v := range vs {
		if v.Check != "unmanaged-proc" || v.Kind != audit.LeftLegal {
			t.Errorf("unexpected %s", v)
		}
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	late, err := sim.Book(t.Context(), s.Jobs["audit-job"].Frames["0004-l"], s.Hosts["b"], 100, seed.GB, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ill := audit.Illegals(run(t, db, audit.Options{SkipCaps: true})); len(ill) != 1 || ill[0].Key != late {
		t.Errorf("after a booking of the released show: illegal %s, want the proc %s", audit.Summary(ill), late)
	}
	// Beside Cuebot, that proc (no outbox row) is Cuebot's; ours are left legal.
	vs = run(t, db, audit.Options{AllowUnmanaged: true, SkipCaps: true})
	if len(vs) != 3 || len(audit.Illegals(vs)) != 0 {
		t.Errorf("beside Cuebot: %s, want the 3 procs of ours left legal", audit.Summary(vs))
	}
	outbox(t, db, "launched", 0) // now the late proc is ours too
	if ill := audit.Illegals(run(t, db, audit.Options{AllowUnmanaged: true, SkipCaps: true})); len(ill) != 1 ||
		ill[0].Key != late {
		t.Errorf("beside Cuebot, ours booked after the release: illegal %s, want the proc %s", audit.Summary(ill), late)
	}
}

// outbox writes a launch outbox row for every proc without one, as the
// booking would have, created age ago.
func outbox(t *testing.T, db *pgtest.DB, state string, age time.Duration) {
	t.Helper()
	exec(t, db, `INSERT INTO cuesched.launch_outbox (proc_id, frame_id, frame_version, host_id, host_name, cluster_id,
		state, created_at)
		SELECT p.pk_proc, p.pk_frame, 1, p.pk_host, h.str_name, 1, $1, greatest(p.ts_booked, now() - make_interval(secs => $2))
		  FROM proc p JOIN host h USING (pk_host)
		 WHERE NOT EXISTS (SELECT 1 FROM cuesched.launch_outbox o WHERE o.proc_id = p.pk_proc)`,
		state, age.Seconds())
}

// A booking neither launched nor released past OutboxAge is illegal; a
// launched one lives as long as its frame runs.
func TestAuditNamesStaleOutboxRows(t *testing.T) {
	t.Parallel()
	db, _, _ := bookedFarm(t)
	outbox(t, db, "launched", 0)
	exec(t, db, `UPDATE cuesched.launch_outbox SET created_at = now() - interval '1 hour'`)
	var stale string
	if err := db.Pool.QueryRow(t.Context(), `UPDATE cuesched.launch_outbox SET state = 'pending'
		WHERE proc_id = (SELECT min(proc_id) FROM cuesched.launch_outbox) RETURNING proc_id`).Scan(&stale); err != nil {
		t.Fatal(err)
	}
	wantExactly(t, run(t, db, audit.Options{OutboxAge: 5 * time.Minute}), audit.Violation{Check: "outbox-stale", Key: stale})
	if vs := run(t, db, audit.Options{OutboxAge: 2 * time.Hour}); len(vs) != 0 {
		t.Errorf("younger than OutboxAge: %s", audit.Summary(vs))
	}
	if vs := run(t, db, audit.Options{}); len(vs) != 0 {
		t.Errorf("without OutboxAge: %s", audit.Summary(vs))
	}
}

// A recorded change older than every proc decides nothing, and the next
// change drops it: cuesched.limit_change holds the changes of running work.
func TestLimitChangesOlderThanEveryProcAreDropped(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, pgtest.Full)
	s, err := seed.Load(t.Context(), db.Pool, &seed.Farm{
		Shows:  []seed.Show{{Name: "idle", Managed: true}},
		Limits: []seed.Limit{{Name: "a", Max: 3}, {Name: "b", Max: 3}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, db, `UPDATE limit_record SET int_max_value = 2 WHERE pk_limit_record = $1`, s.Limits["a"])
	exec(t, db, `UPDATE limit_record SET int_max_value = 4 WHERE pk_limit_record = $1`, s.Limits["a"]) // raised: not recorded
	exec(t, db, `UPDATE limit_record SET int_max_value = 1 WHERE pk_limit_record = $1`, s.Limits["b"])
	var keys []string
	rows, err := db.Pool.Query(t.Context(), `SELECT what || ' ' || key FROM cuesched.limit_change ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if want := "limit " + s.Limits["b"]; len(keys) != 1 || keys[0] != want {
		t.Errorf("limit_change holds %v, want only %q (no proc runs: a's change is dropped)", keys, want)
	}
}
