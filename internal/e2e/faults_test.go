package e2e

import (
	"iter"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

// Faults of cuesched itself, against live instances (faultworld_test.go):
// each subtest injects its fault a few times (many under CUESCHED_CHAOS=1)
// and ends with the suite's checks.
func TestFaultInstance(t *testing.T) {
	t.Parallel()
	w := newFaultWorld(t)
	t.Run("KillBetweenCommitAndLaunch", func(t *testing.T) {
		w.hungOwner(t, cycles(2, 30), "killed", killHard)
	})
	t.Run("KillMidBatch", w.killMidBatch)
	t.Run("StopPastLease", w.stopPastLease)
	t.Run("TermDuringLaunches", func(t *testing.T) {
		w.hungOwner(t, cycles(2, 20), "stopped by SIGTERM", func(i *instance) { i.stop(t) })
	})
	t.Run("UnreportedEndNotRelaunched", w.unreportedEndNotRelaunched)
}

// The owner is killed after RQD accepted a job's launches and before it
// recorded them; the frames run to their end, and Cuebot has not recorded
// their completions yet when the next owner resolves the outbox. RQD no
// longer runs them and would accept a relaunch: the next owner asks RQD
// first and waits for the reports (--report-grace), which arrive meanwhile,
// so each frame runs once.
func (w *faultWorld) unreportedEndNotRelaunched(t *testing.T) {
	f := w.fleet(t)
	victim, tag := f.arrange(t, 0, false)
	frames := w.launchPaused(t, tag, 4)
	release := w.holdReports(frames)
	for _, s := range w.servers() {
		for _, fr := range frames {
			s.Script(fr, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: true, CompleteAfter: 100 * time.Millisecond})
		}
	}
	w.unpause(t, frames)
	w.waitHung(t, frames, victim)
	waitFor(t, time.Minute, "the job's frames run to their end", func() bool {
		return countFunc(w.runs(), func(r run) bool { return slices.Contains(frames, r.frame) && !r.end.IsZero() }) >=
			len(frames)
	}, victim)
	asked := w.statuses()
	killHard(victim)
	w.clearScripts()
	f.after(t, victim, false)
	waitFor(t, time.Minute, "the next owner asked RQD about the launches it inherited", func() bool {
		return w.statuses()-asked >= len(frames)
	}, f.live...)
	release()
	w.succeeded(t, frames, time.Minute, f.live...)
	w.finish(t, f.all...)
}

// fleet is a case's instances: every one it started, and those alive.
type fleet struct {
	w         *faultWorld
	all, live []*instance
}

func (w *faultWorld) fleet(t *testing.T) *fleet {
	f := &fleet{w: w}
	f.add(t)
	return f
}

func (f *fleet) add(t *testing.T) *instance {
	t.Helper()
	i := f.w.start(t)
	f.all = append(f.all, i)
	f.live = append(f.live, i)
	return i
}

func (f *fleet) gone(victim *instance) {
	f.live = slices.DeleteFunc(f.live, func(i *instance) bool { return i == victim })
}

// arrange readies a cycle: with takeover, two instances share the clusters
// and the victim is one that owns every cluster of some tag (returned);
// otherwise one instance owns every cluster and the tag is the cycle's.
func (f *fleet) arrange(t *testing.T, c int, takeover bool) (*instance, string) {
	t.Helper()
	w := f.w
	if !takeover {
		for len(f.live) > 1 {
			f.live[len(f.live)-1].stop(t)
			f.gone(f.live[len(f.live)-1])
		}
		victim := f.live[0]
		waitFor(t, time.Minute, victim.name+" owning every cluster", func() bool {
			ok, _ := ownedOnce(t, w.db.Pool, victim)
			return ok
		}, victim)
		return victim, faultTags[c%len(faultTags)]
	}
	if len(f.live) < 2 {
		f.add(t)
	}
	waitFor(t, time.Minute, "two instances sharing every cluster", func() bool {
		return settled(t, w.db, f.live...)
	}, f.live...)
	return w.ownerOfSomeTag(t, slices.Backward(f.live))
}

// after a victim is gone: without takeover, the next owner is started.
func (f *fleet) after(t *testing.T, victim *instance, takeover bool) {
	t.Helper()
	f.gone(victim)
	if !takeover {
		f.add(t)
	}
}

var nextOwner = map[bool]string{true: "takeover", false: "start"}

// The owner stopped between commit and launch (kill -9, or SIGTERM with
// launches in flight): the fakes hang the launches of a job's frames
// (committed, their outbox rows pending) and the instance that booked them
// is stopped; the next owner resolves the outbox with real launches. Cycles
// alternate the next owner's path (an instance started after the stop,
// which takes every cluster at start; a peer taking the clusters over: after
// the lease, or at once on a handover) and whether the hung launch took
// effect (the frame runs: the next owner keeps the booking as it is) or
// not (the next owner launches it again under the same proc id), and every
// frame must succeed.
func (w *faultWorld) hungOwner(t *testing.T, n int, how string, stop func(*instance)) {
	f := w.fleet(t)
	for c := range n {
		takeover := c%2 == 1
		effect := c%4 == 0 || c%4 == 3 // both paths meet both kinds within four cycles, and within two
		victim, tag := f.arrange(t, c, takeover)
		frames := w.launchHung(t, tag, 4, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: effect,
			CompleteAfter: 5 * time.Second})
		hung := w.waitHung(t, frames, victim)
		stop(victim)
		w.clearScripts()
		t.Logf("cycle %d: %s %s with %d launches hung (took effect: %v); next owner by %s", c, victim.name, how,
			len(hung), effect, nextOwner[takeover])
		f.after(t, victim, takeover)
		w.succeeded(t, frames, time.Minute, f.live...)
		w.relaunched(t, hung, effect)
	}
	w.finish(t, f.all...)
}

// waitHung waits until every frame's launch hangs with its booking
// pending in the outbox, and returns those launches.
func (w *faultWorld) waitHung(t *testing.T, frames []string, victim *instance) []fakerqd.Launch {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	waitFor(t, 2*time.Minute, "the job's launches hung with their bookings pending", func() bool {
		if len(w.launches(frames)) >= len(frames) && count(t, w.db.Pool, `SELECT count(*) FROM cuesched.launch_outbox
				WHERE frame_id = ANY($1) AND state = 'pending'`, frames) == int64(len(frames)) {
			return true
		}
		if time.Now().After(deadline) {
			// Say where it stands, for a failure's reader.
			t.Fatalf("after a minute, %s's launches of the job: %d of %d; outbox: %s; frames: %s", victim.name,
				len(w.launches(frames)), len(frames), w.outboxStates(t, frames), w.frameStates(t, frames))
		}
		return false
	}, victim)
	return w.launches(frames)
}

// frameStates summarises the frames by state.
func (w *faultWorld) frameStates(t *testing.T, frames []string) string {
	t.Helper()
	var s string
	if err := w.db.Pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(str_state || ' ' || n, ', '), 'none')
		FROM (SELECT str_state, count(*) AS n FROM frame WHERE pk_frame = ANY($1) GROUP BY 1 ORDER BY 1) x`,
		frames).Scan(&s); err != nil {
		t.Fatalf("read the frames: %v", err)
	}
	return s
}

func (w *faultWorld) clearScripts() {
	for _, s := range w.servers() {
		s.ClearScripts()
	}
}

// kill -9 mid-batch: the owner of a job is killed once RQD has received a
// few of its launches (a different number each cycle), while it launches
// the rest; the next owner (by start or takeover, alternating) launches
// what is left. The frames run for seconds, longer than the next owner
// takes to resolve the outbox: a frame that ran to its end before the
// resolution, its completion not yet recorded by Cuebot, is not launched
// again (UnreportedEndNotRelaunched).
func (w *faultWorld) killMidBatch(t *testing.T) {
	f := w.fleet(t)
	for c := range cycles(2, 30) {
		takeover := c%2 == 1
		victim, tag := f.arrange(t, c, takeover)
		frames := w.launchPaused(t, tag, 8)
		for _, s := range w.servers() {
			for _, fr := range frames {
				s.Script(fr, fakerqd.Reply{Action: fakerqd.Accept, CompleteAfter: 4 * time.Second})
			}
		}
		w.unpause(t, frames)
		k := 1 + c%7
		waitFor(t, time.Minute, "the first launches of the job", func() bool {
			return len(w.launches(frames)) >= k
		}, victim)
		killHard(victim)
		t.Logf("cycle %d: killed %s after %d of the job's launches (outbox then: %s); next owner by %s", c,
			victim.name, len(w.launches(frames)), w.outboxStates(t, frames), nextOwner[takeover])
		f.after(t, victim, takeover)
		w.succeeded(t, frames, time.Minute, f.live...)
		w.clearScripts()
	}
	w.finish(t, f.all...)
}

// outboxStates summarises the outbox rows of the frames by state.
func (w *faultWorld) outboxStates(t *testing.T, frames []string) string {
	t.Helper()
	var s string
	if err := w.db.Pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(state || ' ' || n, ', '), 'none')
		FROM (SELECT state, count(*) AS n FROM cuesched.launch_outbox WHERE frame_id = ANY($1) GROUP BY 1 ORDER BY 1) x`,
		frames).Scan(&s); err != nil {
		t.Fatalf("read the outbox: %v", err)
	}
	return s
}

// SIGSTOP past the lease, then SIGCONT: the owner is stopped with a job's
// launches hung (bookings pending); its peer ends its sessions, takes its
// clusters and relaunches the bookings (which then run for seconds); the
// stopped instance is woken while they run. Its own launches come back
// unanswered, and the outbox says the peer launched them: it kills none of
// them, no booking runs twice and every frame succeeds.
func (w *faultWorld) stopPastLease(t *testing.T) {
	f := w.fleet(t)
	for c := range cycles(1, 20) {
		victim, tag := f.arrange(t, c, true)
		frames := w.launchHung(t, tag, 4, fakerqd.Reply{Action: fakerqd.Hang})
		// The relaunch runs long enough for the woken instance to find it.
		for _, s := range w.servers() {
			for _, fr := range frames {
				s.Script(fr, fakerqd.Reply{Action: fakerqd.Accept, CompleteAfter: 4 * time.Second})
			}
		}
		hung := w.waitHung(t, frames, victim)
		oldID := victim.registration(t, w.db.Pool)
		victim.signal(syscall.SIGSTOP)
		rest := slices.DeleteFunc(slices.Clone(f.live), func(i *instance) bool { return i == victim })
		waitFor(t, time.Minute, "the stopped instance's bookings relaunched by its peer", func() bool {
			return len(w.launches(frames)) >= 2*len(frames) &&
				count(t, w.db.Pool, `SELECT count(*) FROM cuesched.launch_outbox WHERE frame_id = ANY($1)
					AND state = 'launched'`, frames) == int64(len(frames))
		}, rest...)
		victim.signal(syscall.SIGCONT)
		w.clearScripts()
		waitFor(t, time.Minute, "the woken instance registered again", func() bool {
			id := victim.registration(t, w.db.Pool)
			return id != 0 && id != oldID
		}, f.live...)
		w.succeeded(t, frames, time.Minute, f.live...)
		w.relaunched(t, hung, false)
		// The peer launched the bookings and recorded it before the wake:
		// the woken instance's unanswered launches of them are settled, and
		// nothing of them is killed (a render killed is a render lost).
		if n := countFunc(w.runs(), func(r run) bool { return r.killed && slices.Contains(frames, r.frame) }); n > 0 {
			t.Errorf("cycle %d: the woken %s killed %d runs its peer had launched", c, victim.name, n)
		}
		t.Logf("cycle %d: %s stopped past its lease with %d launches hung, then woken", c, victim.name, len(hung))
		// Its unanswered launches opened its breakers on their hosts (three
		// failures): the next cycle's instances start afresh.
		victim.stop(t)
		f.gone(victim)
	}
	w.finish(t, f.all...)
}

// kills are the KillRunningFrame calls every fake received for the frames.
func (w *faultWorld) kills(frames []string) []fakerqd.Kill {
	var out []fakerqd.Kill
	for _, s := range w.all() {
		for _, k := range s.Kills() {
			if slices.Contains(frames, k.FrameID) {
				out = append(out, k)
			}
		}
	}
	return out
}

// launchHung launches a job of n frames tagged tag whose first launch, on
// whichever host, gets reply.
func (w *faultWorld) launchHung(t *testing.T, tag string, n int, reply fakerqd.Reply) []string {
	t.Helper()
	// The frames' ids are known only once the job is in: script after, but
	// before the instance can launch, the job is held paused.
	frames := w.launchPaused(t, tag, n)
	for _, s := range w.servers() {
		for _, f := range frames {
			s.Script(f, reply)
		}
	}
	w.unpause(t, frames)
	return frames
}

// relaunched checks what the next owner did with each hung booking. When
// the hung launch took effect (RQD runs the frame under the booking's proc)
// the booking is kept without a second launch: a relaunch would run the
// frame twice were it to end in between. When it did not, the booking is
// launched again under the same proc and accepted.
func (w *faultWorld) relaunched(t *testing.T, hung []fakerqd.Launch, effect bool) {
	t.Helper()
	var frames []string
	for _, h := range hung {
		frames = append(frames, h.Frame.GetFrameId())
	}
	after := w.launches(frames)
	for _, h := range hung {
		sent, accepted := 0, false
		for _, l := range after {
			if l.Frame.GetResourceId() != h.Frame.GetResourceId() {
				continue
			}
			sent++
			accepted = accepted || l.Action == fakerqd.Accept && l.Code == 0
		}
		switch {
		case effect && sent != 1:
			t.Errorf("booking %s of frame %s, running on its host, was launched %d more times by the next owner",
				h.Frame.GetResourceId(), h.Frame.GetFrameId(), sent-1)
		case !effect && (sent < 2 || !accepted):
			t.Errorf("booking %s of frame %s was not launched again by the next owner (%d launches in all)",
				h.Frame.GetResourceId(), h.Frame.GetFrameId(), sent)
		}
	}
}

// ownerOfSomeTag picks, of the instances in their order, the first that owns
// every cluster of one of faultTags, and that tag.
func (w *faultWorld) ownerOfSomeTag(t *testing.T, insts iter.Seq2[int, *instance]) (*instance, string) {
	t.Helper()
	k := keyer(t, w.db.Pool)
	var facility string
	if err := w.db.Pool.QueryRow(t.Context(), `SELECT pk_facility FROM facility WHERE str_name = 'local'`).
		Scan(&facility); err != nil {
		t.Fatal(err)
	}
	owner := map[string]int32{}
	for _, c := range readClusters(t, w.db.Pool) {
		owner[c.Key] = c.Owner
	}
	for _, i := range insts {
		id := i.registration(t, w.db.Pool)
		for _, tag := range faultTags {
			keys := k.OfLayer(facility, cluster.SplitLayerTags(tag))
			mine := len(keys) > 0
			for _, key := range keys {
				mine = mine && owner[key.String()] == id
			}
			if mine && id != 0 {
				return i, tag
			}
		}
	}
	t.Fatalf("no instance owns the clusters of any of %v", faultTags)
	return nil, ""
}

// launchPaused launches a paused job of n one-core frames tagged tag.
func (w *faultWorld) launchPaused(t *testing.T, tag string, n int) []string {
	t.Helper()
	return w.launchJob(t, tag, n, true)
}

// unpause resumes the job of the frames, as Cuebot does: the layers'
// waiting counts are untouched, so the instances hear of it by the job's
// row.
func (w *faultWorld) unpause(t *testing.T, frames []string) {
	t.Helper()
	exec1(t, w.db.Pool, `UPDATE job SET b_paused = false WHERE pk_job IN (SELECT pk_job FROM frame WHERE pk_frame = ANY($1))`,
		frames)
}
