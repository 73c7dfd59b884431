package e2e

import (
	"testing"
	"time"
)

// An instance's own bookings do not send it back to the queue: the hint a
// booking sends as it books a layer's last waiting frame (migration 0013) is
// for the other instances, and the owner drops the layer from its next
// round. Taking its own hints had the owner read the job's layers again once
// per layer drained and wake every cluster holding one still waiting: on
// the peer stress farm 975 hints and 14 reads of the queue in one booking.
// Released at once, the farm's shows are read once each, and its queue still
// empties.
func TestOwnHintsNotReread(t *testing.T) {
	t.Parallel()
	db, farm, _ := peerStressDB(t)
	total := int64(farm.FrameCount())
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = false`)
	inst := startInstance(t, db, "own-hints")
	waitFor(t, time.Minute, "the instance owning every cluster", func() bool {
		ok, _ := ownedOnce(t, db.Pool, inst)
		return ok
	}, inst)
	addr := inst.metricsAddr(t)
	// Re-reads of what hints named; the whole queue's rebuilds (the
	// instance's start, a reconnect) are not counted.
	before := scrapeSum(t, addr, "cuesched_queue_refreshes_total")
	hintsBefore := scrapeSum(t, addr, "cuesched_queue_notifications_total")
	exec1(t, db.Pool, `UPDATE show SET b_scheduler_managed = true`)
	waitFor(t, 2*time.Minute, "every frame booked", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) == total
	}, inst)
	waitFor(t, time.Minute, "the queue empty", func() bool { return queuedLayers(t, addr) == 0 }, inst)
	caughtUp(t, db.Pool, inst) // the last bookings' hints delivered before counting
	reads := scrapeSum(t, addr, "cuesched_queue_refreshes_total") - before
	hints := scrapeSum(t, addr, "cuesched_queue_notifications_total") - hintsBefore
	t.Logf("after the release: %v work hints, %v reads of the queue", hints, reads)
	// The release's own hints (one per show made managed) and nothing of
	// the bookings'.
	shows := count(t, db.Pool, `SELECT count(*) FROM show`)
	if hints != float64(shows) || reads > float64(shows) {
		t.Errorf("after the release the queue took %v work hints and was read %v times; want the release's %d "+
			"hints alone, and as many reads at most", hints, reads, shows)
	}
	inst.stop(t)
	auditClean(t, db.Pool)
}
