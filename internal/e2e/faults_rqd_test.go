package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

// Faults of the RQDs, against one live instance (faultworld_test.go): each
// subtest injects its fault a few times (many under CUESCHED_CHAOS=1) and
// ends with the suite's checks.
func TestFaultRQD(t *testing.T) {
	t.Parallel()
	w := newFaultWorld(t)
	t.Run("Refuses", w.rqdRefuses)
	t.Run("HangsPastDeadline", w.rqdHangs)
	t.Run("ReplyLost", w.rqdReplyLost)
	t.Run("Unreachable", w.rqdUnreachable)
	t.Run("DiesMidFrame", w.rqdDies)
}

// allocTags are the allocations' tags: each has two hosts of the farm, so
// work goes on when one of them fails.
var allocTags = []string{"stress_a", "stress_b", "stress_c"}

// scripted launches a job of n frames on the tag of cycle c whose first
// `faulty` frames get reply at their first launch on each host, waits until
// all succeed and returns the faulty frames. Two faulty frames a cycle stay
// under the three failures in a row that open a host's breaker.
func (w *faultWorld) scripted(t *testing.T, inst *instance, c, n, faulty int, reply fakerqd.Reply) []string {
	t.Helper()
	frames := w.launchPaused(t, allocTags[c%len(allocTags)], n)
	for _, s := range w.servers() {
		for _, f := range frames[:faulty] {
			s.Script(f, reply)
		}
	}
	w.unpause(t, frames)
	w.succeeded(t, frames, time.Minute, inst)
	w.clearScripts()
	return frames[:faulty]
}

// rebooked checks that each frame was booked again after its first booking
// was released (a booking per version: the release moved the version on).
func (w *faultWorld) rebooked(t *testing.T, frames []string, what string) {
	t.Helper()
	for _, f := range frames {
		if n := count(t, w.db.Pool, `SELECT count(*) FROM e2e.booking WHERE frame_id = $1`, f); n < 2 {
			t.Errorf("frame %s %s: %d bookings, want it released and booked again", f, what, n)
		}
	}
}

// An RQD refuses a launch (RQD's own refusal): the booking is released and
// the frame booked again.
func (w *faultWorld) rqdRefuses(t *testing.T) {
	inst := w.start(t)
	n := cycles(2, 20)
	for c := range n {
		faulty := w.scripted(t, inst, c, 4, 2, fakerqd.Reply{Action: fakerqd.Refuse,
			Message: "Not launching, insufficient idle cores"})
		w.rebooked(t, faulty, "refused")
	}
	t.Logf("%d launches refused", 2*n)
	w.finish(t, inst)
}

// An RQD hangs past the deadline (--rqd-timeout): the launch has no verdict,
// so the frame is killed before its booking is released; the hung launch
// started the frame in every other cycle (the kill stops it) and not in
// the others (the kill finds nothing). A started frame would run for a
// minute: only the kill ends it.
func (w *faultWorld) rqdHangs(t *testing.T) {
	inst := w.start(t)
	n := cycles(2, 20)
	for c := range n {
		faulty := w.scripted(t, inst, c, 4, 2, fakerqd.Reply{Action: fakerqd.Hang,
			TakesEffect: c%2 == 1, CompleteAfter: time.Minute})
		w.rebooked(t, faulty, "hung")
		w.killedFirst(t, faulty)
	}
	t.Logf("%d launches hung past the deadline", 2*n)
	w.finish(t, inst)
}

// killedFirst checks that each frame got a kill before it was booked again.
func (w *faultWorld) killedFirst(t *testing.T, frames []string) {
	t.Helper()
	ks := w.kills(frames)
	for _, f := range frames {
		if !slices.ContainsFunc(ks, func(k fakerqd.Kill) bool { return k.FrameID == f }) {
			t.Errorf("frame %s: its unanswered launch was not killed", f)
		}
	}
}

// An RQD runs the frame but the reply is lost (the connection drops after
// the request arrived): the frame is killed, its booking released and
// booked again; the first run counts as killed.
func (w *faultWorld) rqdReplyLost(t *testing.T) {
	inst := w.start(t)
	n := cycles(2, 20)
	for c := range n {
		faulty := w.scripted(t, inst, c, 4, 2, fakerqd.Reply{Action: fakerqd.Drop, TakesEffect: true,
			CompleteAfter: time.Minute})
		w.rebooked(t, faulty, "whose reply was lost")
		w.killedFirst(t, faulty)
	}
	t.Logf("%d replies lost", 2*n)
	w.finish(t, inst)
}

// A host unreachable for a while and back: its RQD answers nothing (launches
// and kills hang) while a job books on its allocation; the launches sent to
// it have no verdict and their kills hang, until it answers again: then the
// kills find nothing, the bookings are released and booked again (on the
// allocation's other host meanwhile: the unreachable host's breaker is
// open). Frames it ran before go on and complete.
func (w *faultWorld) rqdUnreachable(t *testing.T) {
	inst := w.start(t)
	n := cycles(1, 20)
	hosts := w.hostNames(t)
	for c := range n {
		host := hosts[c%len(hosts)]
		srv := w.rqd(host)
		launches0, kills0 := len(srv.Launches()), len(srv.Kills())
		srv.SetDefault(fakerqd.Reply{Action: fakerqd.Hang})
		frames := w.launch(t, w.allocTag(t, host), 12)
		// "A while": two kills of what it was sent went unanswered.
		waitFor(t, time.Minute, host+" sent launches and their kills", func() bool {
			return len(srv.Kills()) >= kills0+2
		}, inst)
		srv.SetDefault(fakerqd.Reply{})
		launches, kills := len(srv.Launches())-launches0, len(srv.Kills())-kills0
		w.succeeded(t, frames, 2*time.Minute, inst)
		t.Logf("cycle %d: %s unreachable for %d launches and %d kills, then back", c, host, launches, kills)
	}
	w.finish(t, inst)
}

// An RQD dies mid-frame: its frames never report. What cuesched promises is
// that it neither relaunches nor books again a frame whose proc holds it
// (the frame stays RUNNING, as Cuebot has it), and books nothing on the host
// once Cuebot has marked it DOWN. Cuebot's maintenance then finds the procs
// of the DOWN host and releases them as lost (the frame WAITING again, exit
// status 399, the proc deleted); the frames are booked again elsewhere and
// succeed. The host comes back UP with a new RQD at the end of each cycle.
func (w *faultWorld) rqdDies(t *testing.T) {
	inst := w.start(t)
	n := cycles(2, 20)
	hosts := w.hostNames(t)
	for c := range n {
		host := hosts[c%len(hosts)]
		srv := w.rqd(host)
		frames := w.launchPaused(t, w.allocTag(t, host), 12)
		for _, f := range frames {
			srv.Script(f, fakerqd.Reply{Action: fakerqd.Accept, CompleteAfter: time.Hour})
		}
		w.unpause(t, frames)
		waitFor(t, time.Minute, "frames running on "+host, func() bool { return len(srv.Running()) > 0 }, inst)
		w.killRQD(host)
		// The rest of the job succeeds on the other host, while the frames
		// whose procs are on the dead host stay RUNNING and unbooked.
		waitFor(t, 2*time.Minute, "the job settled around the dead host", func() bool {
			return count(t, w.db.Pool, `SELECT count(*) FROM frame f WHERE f.pk_frame = ANY($1)
				AND f.str_state <> 'SUCCEEDED' AND NOT (f.str_state = 'RUNNING' AND EXISTS (SELECT 1 FROM proc p
				JOIN host h ON h.pk_host = p.pk_host WHERE p.pk_frame = f.pk_frame AND h.str_name = $2))`,
				frames, host) == 0
		}, inst)
		lost := frameIDs(t, w.db, `SELECT p.pk_frame FROM proc p JOIN host h ON h.pk_host = p.pk_host
			WHERE h.str_name = $1 AND p.pk_frame = ANY($2)`, host, frames)
		if n := count(t, w.db.Pool, `SELECT count(*) FROM proc p JOIN e2e.booking held ON held.proc_id = p.pk_proc
			JOIN e2e.booking b ON b.frame_id = p.pk_frame AND b.at > held.at WHERE p.pk_frame = ANY($1)`, lost); n > 0 {
			t.Errorf("cycle %d: %d bookings of frames whose procs on the dead %s still held them", c, n, host)
		}
		down := w.cuebotLostHost(t, host)
		w.succeeded(t, frames, 2*time.Minute, inst)
		if n := count(t, w.db.Pool, `SELECT count(*) FROM e2e.booking b JOIN host h ON h.pk_host = b.host_id
			WHERE h.str_name = $1 AND b.at > $2`, host, down); n > 0 {
			t.Errorf("cycle %d: %d bookings on %s after it was marked DOWN", c, n, host)
		}
		t.Logf("cycle %d: %s died running %d frames; Cuebot marked it DOWN and released them; all booked again",
			c, host, len(lost))
		w.restartRQD(host)
		exec1(t, w.db.Pool, `UPDATE host_stat SET str_state = 'UP', ts_ping = current_timestamp
			WHERE pk_host = (SELECT pk_host FROM host WHERE str_name = $1)`, host)
	}
	w.finish(t, inst)
}

// cuebotLostHost is Cuebot on a host that stopped reporting: it marks it
// DOWN, then releases each proc of it as lost (the frame back to WAITING
// with exit status 399, the proc deleted). It returns when the host was
// marked.
func (w *faultWorld) cuebotLostHost(t *testing.T, host string) time.Time {
	t.Helper()
	exec1(t, w.db.Pool, `UPDATE host_stat SET str_state = 'DOWN'
		WHERE pk_host = (SELECT pk_host FROM host WHERE str_name = $1)`, host)
	down := time.Now()
	frames := frameIDs(t, w.db, `SELECT p.pk_frame FROM proc p JOIN host h ON h.pk_host = p.pk_host
		WHERE h.str_name = $1 AND p.pk_frame IS NOT NULL`, host)
	for _, f := range frames {
		if err := w.sim.Complete(t.Context(), f, "WAITING", 399); err != nil {
			t.Fatalf("release the lost frame %s of %s: %v", f, host, err)
		}
	}
	return down
}

// hostNames are the farm's host names, in the order seeded.
func (w *faultWorld) hostNames(t *testing.T) []string {
	t.Helper()
	return frameIDs(t, w.db, `SELECT str_name FROM host ORDER BY str_name`)
}

// allocTag is the tag of the host's allocation.
func (w *faultWorld) allocTag(t *testing.T, host string) string {
	t.Helper()
	var tag string
	if err := w.db.Pool.QueryRow(t.Context(), `SELECT a.str_tag FROM host h JOIN alloc a USING (pk_alloc)
		WHERE h.str_name = $1`, host).Scan(&tag); err != nil {
		t.Fatal(fmt.Errorf("allocation of %s: %w", host, err))
	}
	return tag
}
