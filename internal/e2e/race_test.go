package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// Overlapping clusters owned by different instances: every host of
// allocation stress_a also carries manual tag pool1, one instance owns the
// allocation's cluster (--alloc-tags stress:stress_a) and another the tag
// bucket of pool1 (--manual-tags pool1). Waves of one-core frames in both
// clusters, more than the hosts hold, race for the same hosts; after every
// wave fills the farm the audit finds no host over-committed, then the
// frames complete and the next part of the wave books. 3 waves in the
// default suite, 50 with CUESCHED_CHAOS=1.
func TestRaceOverlappingClusters(t *testing.T) {
	waves := 3
	if os.Getenv("CUESCHED_CHAOS") == "1" {
		waves = 50
	}
	t.Parallel()
	db := ownDB(t)
	farm := seed.Stress(29, 12, 0)
	for i := range farm.Hosts {
		farm.Hosts[i].Alloc = "local.stress_a"
		farm.Hosts[i].ManualTags = []string{"pool1"}
		farm.Hosts[i].Cores, farm.Hosts[i].Mem = 8*seed.Core, 32*seed.GB
	}
	s, err := seed.Load(t.Context(), db.Pool, farm, 29)
	if err != nil {
		t.Fatal(err)
	}
	recordBookings(t, db.Pool)
	// 50 waves may outlive --host-ping-max-age on a loaded machine.
	hostsReporting(t, db.Pool)
	byAlloc := startInstance(t, db, "race-alloc", "--alloc-tags", "stress:stress_a")
	byTag := startInstance(t, db, "race-tag", "--manual-tags", "pool1")
	insts := []*instance{byAlloc, byTag}
	waitFor(t, time.Minute, "both clusters owned", func() bool {
		return count(t, db.Pool, `SELECT count(DISTINCT c.owner) FROM cuesched.cluster c
			JOIN cuesched.instance i ON i.id = c.owner WHERE i.app_name = ANY($1)`,
			[]string{byAlloc.app, byTag.app}) == 2
	}, insts...)

	const capacity = 12 * 8 // one-core frames the farm holds at once
	sim := &cuebotsim.Sim{Pool: db.Pool}
	for wave := range waves {
		for _, tag := range []string{"stress_a", "pool1"} {
			_, err := s.Launch(t.Context(), seed.Job{Name: fmt.Sprintf("race-%s-%03d", tag, wave), Show: "stress",
				Priority: 50, MaxCores: 1_000_000,
				Layers: []seed.Layer{{Name: "render", Frames: 80, Cores: 100, Mem: seed.GB, Tags: tag}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		for {
			// Booked as far as the hosts allow: the farm full, or nothing waits.
			waitFor(t, time.Minute, fmt.Sprintf("wave %d booked as far as the hosts allow", wave), func() bool {
				waiting := count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'WAITING'`)
				return waiting == 0 || count(t, db.Pool, `SELECT count(*) FROM proc`) == capacity
			}, insts...)
			vs, err := audit.Run(t.Context(), db.Pool, audit.Options{SkipCounters: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				t.Errorf("wave %d: %s", wave, v)
			}
			running := frameIDs(t, db, `SELECT pk_frame FROM frame WHERE str_state = 'RUNNING'`)
			if len(running) == 0 {
				break
			}
			for _, f := range running {
				if err := sim.Succeed(t.Context(), f); err != nil {
					t.Fatal(err)
				}
			}
		}
		if t.Failed() {
			break
		}
	}
	// Both instances booked on the same hosts, or the test raced nothing.
	shared := count(t, db.Pool, `SELECT count(*) FROM (SELECT host_id FROM e2e.booking GROUP BY 1
		HAVING count(DISTINCT app) = 2) h`)
	t.Logf("%d waves: %d bookings by %s, %d by %s, %d hosts booked by both", waves,
		count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1`, byAlloc.app), byAlloc.name,
		count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1`, byTag.app), byTag.name, shared)
	if shared == 0 {
		t.Error("no host was booked by both instances")
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state <> 'SUCCEEDED'`); n != 0 {
		t.Errorf("%d frames not SUCCEEDED", n)
	}
	checkBookings(t, db.Pool)
	auditClean(t, db.Pool)
	for _, i := range insts {
		i.stop(t)
	}
	audittest.Clean(t, db.Pool)
}

func frameIDs(t *testing.T, db *pgtest.DB, sql string, args ...any) []string {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
