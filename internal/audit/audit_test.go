package audit_test

import (
	"context"
	"testing"

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
	db := pgtest.NewDB(t, pgtest.Cuebot)
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

func wantExactly(t *testing.T, vs []audit.Violation, want ...audit.Violation) {
	t.Helper()
	if len(vs) != len(want) {
		t.Fatalf("got %s, want %d violations %v", audit.Summary(vs), len(want), want)
	}
	for i := range want {
		if vs[i].Check != want[i].Check || vs[i].Key != want[i].Key {
			t.Errorf("violation %d: got %s, want check %s on key %s", i, vs[i], want[i].Check, want[i].Key)
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

func TestAuditNamesCapBreaches(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	lim := s.Limits["lic"]
	exec(t, db, `UPDATE limit_record SET int_max_value = 2 WHERE pk_limit_record = $1`, lim)
	wantExactly(t, run(t, db, audit.Options{}), audit.Violation{Check: "cap-limit", Key: lim})
	if vs := run(t, db, audit.Options{SkipCaps: true}); len(vs) != 0 {
		t.Errorf("with caps skipped: %s", audit.Summary(vs))
	}
}

func TestAuditNamesUnmanagedProc(t *testing.T) {
	t.Parallel()
	db, s, _ := bookedFarm(t)
	exec(t, db, `UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1`, s.Shows["audit"])
	vs := run(t, db, audit.Options{})
	if len(vs) != 3 {
		t.Fatalf("got %s, want the 3 procs of the now unmanaged show", audit.Summary(vs))
	}
	for _, v := range vs {
		if v.Check != "unmanaged-proc" {
			t.Errorf("unexpected %s", v)
		}
	}
}
