package e2e

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// TestPollBehindTransactionPooler: `cuesched run --feed poll` on a server
// without logical replication (wal_level = replica), as a role without
// REPLICATION made by `cuesched grants --feed poll`, with its booking pool
// through pgbouncer in transaction mode (--pool-db) and everything
// session-bound on --db, books the stress farm (seed.SuiteStress), then as much work again
// arrives, more than the farm holds, and it keeps booking while Cuebot-style
// completions free hosts (10 s; a minute under CUESCHED_CHAOS=1, which
// `make chaos` sets): it books more frames than ever run at once. Every
// booking is its cluster owner's and made once, the counters of the managed
// show come back to the sum of their procs, and the instance stops cleanly.
// The window stays: it is what lets the farm fill before the count shows
// freed hosts booked again. It runs in parallel with the other tests.
func TestPollBehindTransactionPooler(t *testing.T) {
	t.Parallel()
	window := 10 * time.Second
	if os.Getenv("CUESCHED_CHAOS") == "1" {
		window = time.Minute
	}
	c := pgtest.NewCluster(t, pgcluster.Options{Settings: map[string]string{"wal_level": "replica"}}, peerStress.Name)
	db := pgtest.NewDBIn(t, c, peerStress.Name)
	freshPings(t, db.Pool)
	hostsReporting(t, db.Pool)
	farm := peerStressFarm
	seeded, err := peerStressKeys.On(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	recordBookings(t, db.Pool)
	// The role has what `cuesched grants --feed poll` gives: no REPLICATION.
	role := db.NewRole(t, "poll", "CREATE ROLE %[1]s LOGIN NOREPLICATION")
	out, err := exec.Command(binary, "grants", "--role", role, "--database", db.Name, "--feed", "poll").Output()
	if err != nil {
		t.Fatalf("cuesched grants: %v", err)
	}
	exec1(t, db.Pool, string(out))
	bouncer := startPgbouncer(t, c, role, db.Name)

	inst := startInstanceOn(t, db.DSN+" user="+role, "poll-1", "--feed", "poll", "--poll-interval", "1s",
		"--pool-db", bouncer)
	running := func() int64 { return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) }
	total := int64(farm.FrameCount())
	waitFor(t, 3*time.Minute, "the stress farm booked", func() bool { return running() == total }, inst)
	if n := count(t, db.Pool, `SELECT count(*) FROM pg_replication_slots`); n != 0 {
		t.Fatalf("%d replication slots on a server without logical replication", n)
	}

	// As much work again, more than the farm holds at once: it goes on only
	// as completions free hosts and the polls see them.
	for _, j := range seed.Stress(12, 0, len(farm.Jobs)).Jobs {
		j.Name = "more-" + j.Name
		if _, err := seeded.Launch(t.Context(), j); err != nil {
			t.Fatal(err)
		}
	}
	comp := startCompleter(t, db.Pool, 2)
	flowing := time.After(window)
	peak := int64(0)
	waitFor(t, window+time.Minute, "completions and bookings for the window", func() bool {
		peak = max(peak, running())
		select {
		case <-flowing:
			return true
		default:
			return false
		}
	}, inst)
	comp.stop()
	comp.check(t)
	booked := count(t, db.Pool, `SELECT count(*) FROM e2e.booking`)
	t.Logf("%d frames booked, %d completed, at most %d running at once", booked, comp.done, peak)
	if comp.done == 0 || booked <= peak {
		t.Fatalf("%d frames booked, %d completed, at most %d running at once: freed hosts were not booked again",
			booked, comp.done, peak)
	}

	auditClean(t, db.Pool)
	inst.stop(t)
	checkBookings(t, db.Pool)
	audittest.Clean(t, db.Pool)
}
