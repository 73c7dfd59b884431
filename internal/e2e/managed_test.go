package e2e

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// What a running instance books follows the database without a restart:
//   - a retried frame of a layer with nothing else waiting is booked again;
//   - a show made managed (UPDATE show SET b_scheduler_managed = true) is
//     picked up and booked;
//   - a new allocation with a subscription, and hosts moved into it, make
//     a new cluster whose waiting work is booked;
//   - a show set back to unmanaged is no longer booked: its layer that
//     becomes bookable after the change (start-after) stays waiting, while a
//     managed layer in the same cluster that becomes bookable later is
//     booked;
//   - a show that is never managed is never booked.
func TestManagedShowsFollowTheDatabase(t *testing.T) {
	t.Parallel()
	db := ownDB(t)
	farm := seed.Stress(31, 24, 0)
	for i := range farm.Hosts {
		farm.Hosts[i].Cores, farm.Hosts[i].Mem = 8*seed.Core, 32*seed.GB
	}
	farm.Allocations = append(farm.Allocations, seed.Allocation{Name: "local.fresh", Tag: "fresh"})
	subs := func(allocs ...string) []seed.Subscription {
		var out []seed.Subscription
		for _, a := range allocs {
			out = append(out, seed.Subscription{Alloc: a, Size: 100_000, Burst: 100_000})
		}
		return out
	}
	all := []string{"local.stress_a", "local.stress_b", "local.stress_c", "local.fresh"}
	farm.Shows = []seed.Show{
		{Name: "stress", Managed: true, Subscriptions: subs(all...)},
		{Name: "later", Subscriptions: subs(all...)},
		{Name: "never", Subscriptions: subs(all...)},
	}
	s, err := seed.Load(t.Context(), db.Pool, farm, 31)
	if err != nil {
		t.Fatal(err)
	}
	recordBookings(t, db.Pool)
	launch := func(name, show, tag string, frames int, startAfter time.Time) string {
		t.Helper()
		keys, err := s.Launch(t.Context(), seed.Job{Name: name, Show: show, Priority: 50, MaxCores: 1_000_000,
			Layers: []seed.Layer{{Name: "render", Frames: frames, Cores: 100, Mem: seed.GB, Tags: tag,
				StartAfter: startAfter}}})
		if err != nil {
			t.Fatal(err)
		}
		return keys.ID
	}
	state := func(job, state string) int64 {
		return count(t, db.Pool, `SELECT count(*) FROM frame WHERE pk_job = $1 AND str_state = $2`, job, state)
	}
	for _, tag := range []string{"stress_a", "pool1"} {
		launch("never-"+tag, "never", tag, 5, time.Time{})
	}
	managed := launch("managed", "stress", "stress_a", 5, time.Time{})
	later := launch("later", "later", "stress_a", 5, time.Time{})
	laterFresh := launch("later-fresh", "later", "fresh", 5, time.Time{})

	inst := startInstance(t, db, "managed")
	waitFor(t, time.Minute, "the managed show's frames booked", func() bool { return state(managed, "RUNNING") == 5 }, inst)

	// A retry (Cuebot stops a failed frame RUNNING -> WAITING and releases
	// its proc) in a layer with nothing else waiting: its hint comes through
	// the change stream (migration 0008) and the frame is booked again.
	sim := &cuebotsim.Sim{Pool: db.Pool}
	retried := frameIDs(t, db, `SELECT pk_frame FROM frame WHERE pk_job = $1 ORDER BY int_number LIMIT 1`, managed)[0]
	if err := sim.Retry(t.Context(), retried); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the retried frame booked again", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM frame WHERE pk_frame = $1 AND str_state = 'RUNNING'`, retried) == 1
	}, inst)
	if n := state(later, "RUNNING"); n != 0 {
		t.Fatalf("%d frames of a show not yet managed booked", n)
	}

	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true WHERE str_name = 'later'`)
	waitFor(t, time.Minute, "the show made managed booked", func() bool { return state(later, "RUNNING") == 5 }, inst)

	// No host carries tag "fresh" yet: move four hosts into the allocation
	// that gives it, as Cuebot does (the host's allocation and its ALLOC tag).
	if n := state(laterFresh, "RUNNING"); n != 0 {
		t.Fatalf("%d frames booked on a tag no host carries", n)
	}
	exec1(t, db.Pool, `WITH moved AS (
			UPDATE host SET pk_alloc = (SELECT pk_alloc FROM alloc WHERE str_name = 'local.fresh')
			 WHERE pk_host IN (SELECT pk_host FROM host ORDER BY str_name LIMIT 4) RETURNING pk_host)
		UPDATE host_tag SET str_tag = 'fresh' WHERE lower(str_tag_type) = 'alloc' AND pk_host IN (SELECT pk_host FROM moved)`)
	exec1(t, db.Pool, `UPDATE host h SET str_tags = (SELECT string_agg(str_tag, ' ' ORDER BY str_tag) FROM host_tag t
		WHERE t.pk_host = h.pk_host)`)
	waitFor(t, time.Minute, "work in the new allocation booked", func() bool { return state(laterFresh, "RUNNING") == 5 }, inst)

	// Back to unmanaged: a layer of the show that becomes bookable after
	// the change must stay waiting, while a managed layer in the same
	// cluster that becomes bookable just after it is booked (so the loop
	// did look at the cluster then).
	due := time.Now().Add(2 * time.Second)
	stale := launch("later-after", "later", "stress_a", 3, due)
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = false WHERE str_name = 'later'`)
	sentinel := launch("sentinel", "stress", "stress_a", 3, due.Add(100*time.Millisecond))
	waitFor(t, time.Minute, "the managed layer due after the unmanaged one booked", func() bool {
		return state(sentinel, "RUNNING") == 3
	}, inst)
	if n := state(stale, "RUNNING"); n != 0 {
		t.Errorf("%d frames of a show set back to unmanaged booked", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM e2e.booking b JOIN frame f ON f.pk_frame = b.frame_id
		JOIN job j USING (pk_job) JOIN show s USING (pk_show) WHERE s.str_name = 'never'`); n != 0 {
		t.Errorf("%d frames of a show never managed booked", n)
	}
	checkBookings(t, db.Pool)

	// The frames of the now unmanaged show finish; Cuebot lowers its
	// counters itself, as for any show it manages.
	for _, f := range frameIDs(t, db, `SELECT f.pk_frame FROM frame f JOIN job j USING (pk_job) JOIN show s USING (pk_show)
		WHERE s.str_name = 'later' AND f.str_state = 'RUNNING'`) {
		if err := sim.Succeed(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	inst.stop(t)
	auditClean(t, db.Pool)
}
