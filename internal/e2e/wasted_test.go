package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/dispatch"
)

// Wasted attempts (DESIGN.md): placements matching hands to dispatch that
// end in no committed booking. OpenCue's Rust scheduler reported 42% on its
// stress farm, one scheduler booking it; the target is under 5%. One
// instance books the stress farm (seed.SuiteStress); then three do, whose clusters share
// hosts (each host is in an allocation cluster and in the tag buckets of its
// manual and hostname tags), so placements of one are committed against
// hosts another has just booked and its replica has not seen yet. The
// figures are logged; the test fails at 10% wasted or more, CUESCHED_BENCH=1
// at 5%. Not parallel: how the instances split the work (each must book a
// fifth of it) depends on their pace, which other tests' load would skew.
func TestWastedAttempts(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-instances", n), func(t *testing.T) {
			db, farm, _ := peerStressDB(t)
			total := int64(farm.FrameCount())
			// Hold the work back until every instance has its snapshot, so
			// they all book (one alone would take the farm before the others
			// start): a start-after time in the future keeps the layers
			// queued, so ownership sees the pending work and spreads the
			// clusters by it, as on a farm where work is always pending.
			if _, err := db.Pool.Exec(t.Context(), `UPDATE layer SET ts_start_after = now() + interval '1 day'`); err != nil {
				t.Fatal(err)
			}
			var regs []*prometheus.Registry
			for i := range n {
				regs = append(regs, startInProcess(t, db, fmt.Sprintf("waste-%d", i+1), nil))
			}
			// ... and until the clusters have settled between them: a booking
			// in a cluster moving to another instance is deferred, which says
			// nothing of matching.
			waitFor(t, time.Minute, "every instance owning clusters by their work, none moving", func() bool {
				return count(t, db.Pool, `SELECT count(*) FROM cuesched.instance`) == int64(n) &&
					count(t, db.Pool, `SELECT count(DISTINCT owner) FROM cuesched.cluster`) == int64(n) &&
					count(t, db.Pool, `SELECT count(*) FROM cuesched.handover`) == 0 &&
					count(t, db.Pool, `SELECT count(*) FROM cuesched.cluster`) == int64(len(expectedClusters(t, db.Pool))) &&
					spreadByWork(t, db.Pool, n)
			})
			if _, err := db.Pool.Exec(t.Context(), `UPDATE layer SET ts_start_after = NULL`); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					logWaiting(t, db.Pool)
				}
			})
			waitFor(t, 2*time.Minute, "every frame booked", func() bool {
				return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) == total
			})
			// A booking's commit is visible before its Book call returns and
			// is counted: wait for the counts too.
			waitFor(t, time.Minute, "every booking counted", func() bool {
				var n float64
				for _, reg := range regs {
					n += metricValue(t, reg, "cuesched_placement_attempts_total", "outcome", "booked")
				}
				return int64(n) == total
			})
			var booked, dropped, deferred float64
			drops := map[string]float64{}
			var shares []float64
			var busy, handovers float64
			for _, reg := range regs {
				busy += metricValue(t, reg, "cuesched_dispatch_cluster_busy_total")
				handovers += metricValue(t, reg, "cuesched_handovers_total")
				mine := metricValue(t, reg, "cuesched_placement_attempts_total", "outcome", "booked")
				shares = append(shares, mine/float64(total))
				booked += mine
				dropped += metricValue(t, reg, "cuesched_placement_attempts_total", "outcome", "dropped")
				deferred += metricValue(t, reg, "cuesched_placement_attempts_total", "outcome", "deferred")
				for _, r := range []dispatch.DropReason{dispatch.DropHostCapacity, dispatch.DropGuard, dispatch.DropBurst,
					dispatch.DropDuplicate} {
					drops[string(r)] += metricValue(t, reg, "cuesched_dispatch_drops_total", "reason", string(r))
				}
			}
			if int64(booked) != total {
				t.Errorf("attempts booked %v, want the farm's %d frames", booked, total)
			}
			wasted := dropped + deferred
			ratio := wasted / (booked + wasted)
			t.Logf("stress farm of %d hosts, %d instance(s): %v attempts, %v wasted (%.2f%%): %v deferred, %v dropped %v; "+
				"share of the frames booked by each instance %.2f; %v batches found their cluster busy, %v clusters handed over",
				len(farm.Hosts), n, booked+wasted, wasted, 100*ratio, deferred, dropped, drops, shares, busy, handovers)
			// The benchmark's target is 5% (issue 11), the default suite's
			// 10%. Every host carries a manual tag, so each allocation
			// cluster shares its hosts with the tag buckets of other
			// instances; while a tag bucket's work planned onto the hosts of
			// another instance's allocation, 7-12% of attempts were dropped
			// on host capacity (BENCHMARKS.md).
			limit := 0.10
			if benchOn() {
				limit = 0.05
			}
			if ratio >= limit {
				t.Errorf("wasted attempts %.2f%%, want under %.0f%%", 100*ratio, 100*limit)
			}
			// The figure counts only where every instance took its part
			// (issue 11: at least 20% of the frames each).
			if n > 1 {
				for i, sh := range shares {
					if sh < 0.20 {
						t.Errorf("instance waste-%d booked %.1f%% of the frames, want at least 20%% each", i+1, 100*sh)
					}
				}
			}
			// With the farm full and nothing queued, every owned cluster
			// sleeps until an event wakes it.
			clusters := count(t, db.Pool, `SELECT count(*) FROM cuesched.cluster`)
			waitFor(t, time.Minute, "every cluster asleep", func() bool {
				var asleep float64
				for _, reg := range regs {
					asleep += metricValue(t, reg, "cuesched_clusters_asleep")
				}
				return int64(asleep) == clusters
			})
			auditClean(t, db.Pool)
		})
	}
}

// spreadByWork reports whether no owner of clusters holds more pending
// layers than ownership's drift trigger allows (1.5 x the mean over n
// instances): the balance ownership keeps once it has seen the work.
func spreadByWork(t *testing.T, pool *pgxpool.Pool, n int) bool {
	t.Helper()
	pending := pendingLayers(t, pool)
	load := map[int32]int64{}
	var total int64
	for _, c := range readClusters(t, pool) {
		load[c.Owner] += pending[c.Key]
		total += pending[c.Key]
	}
	for _, l := range load {
		if float64(l) > 1.5*float64(total)/float64(n) {
			return false
		}
	}
	return total > 0
}
