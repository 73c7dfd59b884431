package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// Three `cuesched run` processes share a farm with pending work in every
// allocation and manual-tag cluster. The hosts start locked, so the work
// stays pending while the instances split the clusters: every cluster is
// owned exactly once and the heaviest instance's pending work (queued
// layers per cluster, ownership's weights, counted from the database) is at
// most 1.25 x the mean. Then the hosts open and every frame is booked
// exactly once, each by the owner of its cluster; the audit is clean. The
// farm has room to spare (360 hosts for 48 jobs): with no frame ever
// finishing, a tight farm could leave a frame of a manual tag whose hosts
// other work filled first, which is packing, not what this test is about.
func TestThreeInstancesShareTheFarm(t *testing.T) {
	t.Parallel()
	db := ownDB(t)
	farm := seed.Stress(13, 360, 48)
	for i := range farm.Hosts {
		farm.Hosts[i].Lock = "LOCKED"
	}
	total := int64(farm.FrameCount())
	if _, err := seed.Load(t.Context(), db.Pool, farm, 13); err != nil {
		t.Fatal(err)
	}
	recordBookings(t, db.Pool)
	insts := []*instance{startInstance(t, db, "share-1"), startInstance(t, db, "share-2"),
		startInstance(t, db, "share-3")}

	t.Cleanup(func() {
		if t.Failed() {
			logWaiting(t, db.Pool)
		}
	})
	var why string
	defer func() {
		if t.Failed() && why != "" {
			t.Log("last seen: " + why)
		}
	}()
	waitFor(t, time.Minute, "every cluster owned once and the pending work balanced", func() bool {
		var ok bool
		if ok, why = ownedOnce(t, db.Pool, insts...); !ok {
			return false
		}
		work, _ := loads(t, db.Pool, insts...)
		if ok, why = balanced(work, 1.25); !ok {
			return false
		}
		return true
	}, insts...)
	work, clusters := loads(t, db.Pool, insts...)
	t.Logf("pending layers by instance %v, clusters by instance %v", work, clusters)

	exec1(t, db.Pool, `UPDATE host SET str_lock_state = 'OPEN'`)
	waitFor(t, 2*time.Minute, "every frame booked", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) == total
	}, insts...)
	for _, i := range insts {
		n := count(t, db.Pool, `SELECT count(*) FROM e2e.booking WHERE app = $1`, i.app)
		t.Logf("%s booked %d frames", i.name, n)
	}
	if n := count(t, db.Pool, `SELECT count(DISTINCT frame_id) FROM e2e.booking`); n != total {
		t.Errorf("%d frames booked, want %d", n, total)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM proc`); n != total {
		t.Errorf("%d procs, want %d", n, total)
	}
	checkBookings(t, db.Pool)
	for _, i := range insts {
		i.stop(t)
	}
	auditClean(t, db.Pool)
}

// balanced reports whether the heaviest load is at most threshold x the
// mean.
func balanced(work map[string]int64, threshold float64) (bool, string) {
	var sum, heaviest int64
	for _, w := range work {
		sum += w
		heaviest = max(heaviest, w)
	}
	mean := float64(sum) / float64(len(work))
	if float64(heaviest) > threshold*mean {
		return false, fmt.Sprintf("heaviest instance holds %d pending layers, %.2f x the mean %.1f (%v)",
			heaviest, float64(heaviest)/mean, mean, work)
	}
	return true, ""
}
