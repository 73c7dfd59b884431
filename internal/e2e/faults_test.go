package e2e

import (
	"slices"
	"strings"
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
	t.Run("KillBetweenCommitAndLaunch", w.killBetweenCommitAndLaunch)
}

// kill -9 between commit and launch: the fakes hang the launches of a job's
// frames (committed, their outbox rows pending), the instance that booked
// them is killed, and the next owner resolves the outbox with real
// launches. Cycles alternate the next owner's path (an instance started
// after the kill, which takes every cluster at start; a peer taking the
// killed one's clusters over after its lease) and whether the hung launch
// took effect (the frame runs: the relaunch is answered "already running")
// or not (the relaunch starts it). Each hung booking must be launched again
// under the same proc id, and every frame succeed.
func (w *faultWorld) killBetweenCommitAndLaunch(t *testing.T) {
	n := cycles(4, 30)
	all := []*instance{w.start(t)}
	live := []*instance{all[0]}
	for c := range n {
		takeover := c%2 == 1
		effect := (c/2)%2 == 1
		var victim *instance
		var tag string
		if takeover {
			peer := w.start(t)
			all = append(all, peer)
			live = append(live, peer)
			waitFor(t, time.Minute, "two instances sharing every cluster", func() bool {
				return settled(t, w.db, live...)
			}, live...)
			victim, tag = w.ownerOfSomeTag(t, peer, live[0])
		} else {
			victim = live[0]
			waitFor(t, time.Minute, victim.name+" owning every cluster", func() bool {
				ok, _ := ownedOnce(t, w.db.Pool, victim)
				return ok
			}, victim)
			tag = faultTags[c%len(faultTags)]
		}
		frames := w.launchHung(t, tag, 4, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: effect,
			CompleteAfter: 5 * time.Second})
		waitFor(t, time.Minute, "the job's launches hung with their bookings pending", func() bool {
			return len(w.launches(frames)) >= len(frames) &&
				count(t, w.db.Pool, `SELECT count(*) FROM cuesched.launch_outbox WHERE frame_id = ANY($1)
					AND state = 'pending'`, frames) == int64(len(frames))
		}, victim)
		hung := w.launches(frames)
		killHard(victim)
		for _, s := range w.servers() {
			s.ClearScripts()
		}
		t.Logf("cycle %d: killed %s with %d launches hung (took effect: %v); next owner by %s", c, victim.name,
			len(hung), effect, map[bool]string{true: "takeover", false: "start"}[takeover])
		live = slices.DeleteFunc(live, func(i *instance) bool { return i == victim })
		if !takeover {
			next := w.start(t)
			all = append(all, next)
			live = append(live, next)
		}
		w.succeeded(t, frames, time.Minute, live...)
		w.relaunched(t, hung, effect)
	}
	w.finish(t, all...)
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

// relaunched checks that each hung booking was launched again by the next
// owner under the same proc: answered "already running" when the hung
// launch took effect, accepted when it did not.
func (w *faultWorld) relaunched(t *testing.T, hung []fakerqd.Launch, effect bool) {
	t.Helper()
	var frames []string
	for _, h := range hung {
		frames = append(frames, h.Frame.GetFrameId())
	}
	after := w.launches(frames)
	for _, h := range hung {
		ok := false
		for _, l := range after {
			if l.Frame.GetResourceId() != h.Frame.GetResourceId() || l.Action != fakerqd.Accept {
				continue
			}
			if effect && strings.Contains(l.Message, "already running") || !effect && l.Code == 0 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("booking %s of frame %s was not launched again by the next owner (took effect: %v)",
				h.Frame.GetResourceId(), h.Frame.GetFrameId(), effect)
		}
	}
}

// ownerOfSomeTag picks, of the instances in order, the first that owns
// every cluster of one of faultTags, and that tag.
func (w *faultWorld) ownerOfSomeTag(t *testing.T, insts ...*instance) (*instance, string) {
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
