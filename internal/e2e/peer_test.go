package e2e

import (
	"testing"
	"time"
)

// One `cuesched run --dry-run` process books the stress farm (seed.SuiteStress). A first
// instance is stopped with SIGTERM while it books: it exits 0, leaves no
// half-written batch (audit clean) and hands its clusters over at once (its
// registration is gone and it owns nothing). A second instance then books
// the rest, every frame exactly once, exports every metric deploy/'s
// dashboard and alerts read, and stops cleanly too.
func TestPeerStressFarm(t *testing.T) {
	t.Parallel()
	db, farm, _ := peerStressDB(t)
	hostsReporting(t, db.Pool)
	total := int64(farm.FrameCount())
	recordBookings(t, db.Pool)
	running := func() int64 { return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) }

	first := startInstance(t, db, "peer-1")
	waitFor(t, 2*time.Minute, "the first instance booking", func() bool { return running() > 0 }, first)
	id := first.registration(t, db.Pool)
	first.stop(t)
	if n := count(t, db.Pool, `SELECT count(*) FROM cuesched.instance WHERE id = $1`, id); n != 0 {
		t.Errorf("the stopped instance is still registered")
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM cuesched.cluster WHERE owner IS NOT NULL`); n != 0 {
		t.Errorf("%d clusters still owned after the only instance stopped", n)
	}
	booked := running()
	t.Logf("the first instance booked %d of %d frames before SIGTERM", booked, total)
	auditClean(t, db.Pool)

	second := startInstance(t, db, "peer-2", "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			logWaiting(t, db.Pool)
		}
	})
	waitFor(t, 2*time.Minute, "every frame booked", func() bool { return running() == total }, second)
	// An instance that has booked exports every metric deploy/'s dashboard
	// and alert rules read.
	checkDeployMetrics(t, second.metricsAddr(t))
	second.stop(t)
	if n := count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state <> 'RUNNING'`); n != 0 {
		t.Errorf("%d frames not RUNNING", n)
	}
	if n := count(t, db.Pool, `SELECT count(*) FROM proc`); n != total {
		t.Errorf("%d procs, want %d", n, total)
	}
	checkBookings(t, db.Pool)
	auditClean(t, db.Pool)
}
