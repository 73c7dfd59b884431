package e2e

import (
	"os/exec"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/audit/audittest"
	"github.com/cuesched/cuesched/internal/pgcluster"
	"github.com/cuesched/cuesched/internal/pgtest"
	"github.com/cuesched/cuesched/internal/seed"
)

// TestPollBehindTransactionPooler: `cuesched run --feed poll` on a server
// without logical replication (wal_level = replica), as a role without
// REPLICATION, with its booking pool through pgbouncer in transaction mode
// (--pool-db) and everything session-bound on --db, books a small stress
// farm and keeps booking for 20 s while Cuebot-style completions free
// hosts: it books more frames than ever run at once. Every booking is its
// cluster owner's and made once, the counters of the managed show come back
// to the sum of their procs, and the instance stops cleanly.
func TestPollBehindTransactionPooler(t *testing.T) {
	c := pgtest.NewCluster(t, pgcluster.Options{Settings: map[string]string{"wal_level": "replica"}})
	db := pgtest.NewDBIn(t, c)
	if _, err := seed.Load(t.Context(), db.Pool, seed.Stress(11, 24, 120), 11); err != nil {
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
	waitFor(t, time.Minute, "the first bookings", func() bool { return running() > 0 }, inst)
	if n := count(t, db.Pool, `SELECT count(*) FROM pg_replication_slots`); n != 0 {
		t.Fatalf("%d replication slots on a server without logical replication", n)
	}

	// More work than the farm holds at once: it goes on only as completions
	// free hosts and the polls see them.
	comp := startCompleter(t, db.Pool, 2)
	flowing := time.After(20 * time.Second)
	peak := int64(0)
	waitFor(t, 40*time.Second, "20 s of completions and bookings", func() bool {
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
	total := count(t, db.Pool, `SELECT count(*) FROM e2e.booking`)
	t.Logf("%d frames booked, %d completed, at most %d running at once", total, comp.done, peak)
	if comp.done == 0 || total <= peak {
		t.Fatalf("%d frames booked, %d completed, at most %d running at once: freed hosts were not booked again",
			total, comp.done, peak)
	}

	auditClean(t, db.Pool)
	inst.stop(t)
	checkBookings(t, db.Pool)
	audittest.Clean(t, db.Pool)
}
