package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

// Cuebot beside us, against one live instance per case (faultworld_test.go):
// what Cuebot writes while cuesched books (retries, a job killed, a host
// locked or taken DOWN, a burst lowered, a frame released in two steps),
// each a few times (many under CUESCHED_CHAOS=1), each case ending with the
// suite's checks.
//
// A change of Cuebot's is ordered against the bookings by commit order, not
// by the clock: the change's transaction takes a snapshot after its write
// (cuebotChange), and every booking records its transaction id (e2e.booking's
// xid). A booking the snapshot does not show committed did not commit before
// the change; one that read the row the change wrote under a lock the change
// waits for is always shown. So "nothing booked after the change" is: every
// booking the change concerns is visible in its snapshot.
func TestFaultCuebot(t *testing.T) {
	t.Parallel()
	w := newFaultWorld(t)
	exec1(t, w.db.Pool, `ALTER TABLE e2e.booking ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id()`)
	t.Run("Retries", w.cuebotRetries)
	t.Run("JobKilled", w.cuebotKillsJob)
	t.Run("HostLocked", func(t *testing.T) {
		w.hostTaken(t, "locked", `UPDATE host SET str_lock_state = 'LOCKED' WHERE str_name = $1`,
			`UPDATE host SET str_lock_state = 'OPEN' WHERE str_name = $1`)
	})
	t.Run("HostDown", func(t *testing.T) {
		w.hostTaken(t, "DOWN", `UPDATE host_stat SET str_state = 'DOWN'
			WHERE pk_host = (SELECT pk_host FROM host WHERE str_name = $1)`,
			`UPDATE host_stat SET str_state = 'UP' WHERE pk_host = (SELECT pk_host FROM host WHERE str_name = $1)`)
	})
	t.Run("BurstLowered", w.burstLowered)
	t.Run("TwoStepRelease", w.twoStepRelease)
}

// cuebotChange commits one write of Cuebot's and returns a snapshot taken in
// its transaction after the write: a booking it shows committed before the
// change did.
func (w *faultWorld) cuebotChange(t *testing.T, write func(ctx context.Context, tx pgx.Tx) error) string {
	t.Helper()
	var snap string
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := pgx.BeginFunc(ctx, w.db.Pool, func(tx pgx.Tx) error {
		if err := write(ctx, tx); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
	})
	if err != nil {
		t.Fatalf("Cuebot's change: %v", err)
	}
	return snap
}

// bookedAfter counts the bookings the snapshot of a change does not show
// committed, of those the condition (on e2e.booking b) selects; $1 is the
// snapshot, args follow.
func (w *faultWorld) bookedAfter(t *testing.T, snap, cond string, args ...any) int64 {
	t.Helper()
	return count(t, w.db.Pool, `SELECT count(*) FROM e2e.booking b
		WHERE NOT pg_visible_in_snapshot(b.xid, $1::pg_snapshot) AND `+cond, append([]any{snap}, args...)...)
}

// serveHeld records the held completion reports of frames (holdReports)
// with record, in the order they come, until the returned stop is called:
// Cuebot handling them its own way for a case.
func (w *faultWorld) serveHeld(t *testing.T, frames []string, record func(rf *rqd.RunFrame)) (stop func()) {
	t.Helper()
	release := w.holdReports(frames)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			w.mu.Lock()
			var mine []*rqd.RunFrame
			w.parked = slices.DeleteFunc(w.parked, func(rf *rqd.RunFrame) bool {
				if slices.Contains(frames, rf.GetFrameId()) {
					mine = append(mine, rf)
					return true
				}
				return false
			})
			w.mu.Unlock()
			for _, rf := range mine {
				record(rf)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		release()
	}
}

// report is Cuebot recording one completion report as state with the exit
// status, in its two transactions, ignoring a report whose proc no longer
// holds the frame (as faultWorld.complete does).
func (w *faultWorld) report(rf *rqd.RunFrame, state string, exit int, between func()) {
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	p, err := w.sim.ProcOfFrame(ctx, rf.GetFrameId())
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && p.ID != rf.GetResourceId()) {
		return
	}
	if err == nil {
		if err = w.sim.StopFrame(ctx, rf.GetFrameId(), state, exit); err == nil {
			between()
			err = w.sim.DeleteProc(ctx, p.ID)
		}
	}
	if err != nil && !errors.Is(err, cuebotsim.ErrStale) && w.ctx.Err() == nil {
		w.mu.Lock()
		if w.complErr == nil {
			w.complErr = err
		}
		w.mu.Unlock()
	}
}

// fastTags are the manual tags of the farm's hosts whose frames run
// shortest (300 and 500 ms), one host each: cases that wait for frames to
// run several times in a row run there.
var fastTags = []string{"pool4", "pool1", "pool5"}

// Completions and retries: a job's frames fail with a retryable status
// (exit 1: back to WAITING, Cuebot's retry), some twice, and are booked
// again each time, then succeed. Each frame is booked once per attempt, its
// int_retries counts the failed ones, and no attempt ran twice.
func (w *faultWorld) cuebotRetries(t *testing.T) {
	inst := w.start(t)
	for c := range cycles(2, 20) {
		frames := w.launchPaused(t, fastTags[c%len(fastTags)], 8)
		fails := map[string]int{}
		for i, f := range frames[:4] {
			fails[f] = 1 + i%2
		}
		left := maps.Clone(fails)
		var mu sync.Mutex
		stop := w.serveHeld(t, frames, func(rf *rqd.RunFrame) {
			mu.Lock()
			fail := left[rf.GetFrameId()] > 0
			if fail {
				left[rf.GetFrameId()]--
			}
			mu.Unlock()
			if fail {
				w.report(rf, "WAITING", 1, func() {})
			} else {
				w.report(rf, "SUCCEEDED", 0, func() {})
			}
		})
		w.unpause(t, frames)
		w.succeeded(t, frames, time.Minute, inst)
		stop()
		for _, f := range frames {
			bookings := count(t, w.db.Pool, `SELECT count(*) FROM e2e.booking WHERE frame_id = $1`, f)
			retries := count(t, w.db.Pool, `SELECT int_retries FROM frame WHERE pk_frame = $1`, f)
			if bookings != int64(1+fails[f]) || retries != int64(fails[f]) {
				t.Errorf("cycle %d: frame %s failed %d times: %d bookings and int_retries %d, want %d and %d", c, f,
					fails[f], bookings, retries, 1+fails[f], fails[f])
			}
		}
		t.Logf("cycle %d: %d frames, %d attempts failed and booked again", c, len(frames), sum(fails))
	}
	w.finish(t, inst)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// killSettle is how long Cuebot waits between a job's shutdown and stopping
// its running frames ("in case any frames were dispatched during the job
// shutdown"): 3 s in Cuebot, shorter here, which only widens the window in
// which a launch of a booking committed before the kill may still be on
// its way.
const killSettle = time.Second

// A job killed while its frames are booked and launched: a job larger than
// its allocation (another beside it) is killed by Cuebot: the job FINISHED in
// one transaction, then, a moment later, each of its RUNNING frames stopped
// (WAITING, exit status 500: a manual stop, not a lost frame), killed on RQD
// and its proc deleted. Cycles alternate short frames, the kill landing
// while frames complete and are booked again (bookings race the kill's
// commit), and long ones, the kill landing while the first launches are
// still on their way and the stop finding the frames running. Nothing of
// the job may be booked after the kill's commit, every run of its frames
// ends and none starts after the stop, and its frames end as Cuebot leaves
// them: SUCCEEDED (done before the kill) or WAITING, none RUNNING, none with
// a proc, none "lost" (399); the job beside it succeeds.
func (w *faultWorld) cuebotKillsJob(t *testing.T) {
	inst := w.start(t)
	for c := range cycles(2, 20) {
		tag := allocTags[c%len(allocTags)]
		long := c%2 == 1
		frames := w.launchPaused(t, tag, 40)
		if long {
			for _, s := range w.servers() {
				for _, f := range frames {
					s.Script(f, fakerqd.Reply{Action: fakerqd.Accept, CompleteAfter: 2 * time.Second})
				}
			}
		}
		w.unpause(t, frames)
		beside := w.launch(t, tag, 8)
		k := 12 + 3*c%10 // into the second round of bookings
		if long {
			k = 1 + c%8 // the first launches on their way
		}
		waitFor(t, time.Minute, "the job's launches under way", func() bool { return len(w.launches(frames)) >= k }, inst)
		job := frameIDs(t, w.db, `SELECT pk_job FROM frame WHERE pk_frame = $1`, frames[0])[0]
		snap := w.cuebotChange(t, func(ctx context.Context, tx pgx.Tx) error {
			ok, err := cuebotsim.ShutdownJob(ctx, tx, job)
			if err == nil && !ok {
				err = errors.New("the job was not PENDING")
			}
			return err
		})
		time.Sleep(killSettle) // Cuebot's own pause, which the case reproduces
		stopped := w.cuebotStopFrames(t, job)
		sweep := time.Now()
		if n := w.bookedAfter(t, snap, `b.frame_id = ANY($2)`, frames); n > 0 {
			t.Errorf("cycle %d: %d bookings of the killed job committed after its kill", c, n)
		}
		waitFor(t, time.Minute, "every run of the killed job's frames ended", func() bool {
			return !slices.ContainsFunc(w.runs(), func(r run) bool { return slices.Contains(frames, r.frame) && r.end.IsZero() })
		}, inst)
		if late := countFunc(w.runs(), func(r run) bool { return slices.Contains(frames, r.frame) && r.start.After(sweep) }); late > 0 {
			t.Errorf("cycle %d: %d runs of the killed job's frames started after Cuebot stopped them", c, late)
		}
		if n := count(t, w.db.Pool, `SELECT count(*) FROM frame f WHERE f.pk_job = $1 AND (f.str_state NOT IN ('SUCCEEDED', 'WAITING')
				OR f.int_exit_status = 399 OR EXISTS (SELECT 1 FROM proc p WHERE p.pk_frame = f.pk_frame))`, job); n > 0 {
			t.Errorf("cycle %d: %d frames of the killed job not ended as Cuebot ends them: %s", c, n, w.frameStates(t, frames))
		}
		if n := count(t, w.db.Pool, `SELECT count(*) FROM frame WHERE pk_job = $1 AND int_exit_status = $2`, job,
			cuebotsim.KillExitStatus); n != int64(stopped) {
			t.Errorf("cycle %d: %d frames of the killed job stopped by hand (exit status %d), want the %d stopped", c, n,
				cuebotsim.KillExitStatus, stopped)
		}
		// A completion report Cuebot is still recording lets go of its
		// frame (the proc's pk_frame NULL) before it deletes the proc, in
		// a transaction of its own: the run's end is seen before that.
		waitFor(t, time.Minute, "Cuebot's completions of the killed job's frames recorded", func() bool {
			return count(t, w.db.Pool, `SELECT count(*) FROM proc WHERE pk_job = $1 AND pk_frame IS NULL`, job) == 0
		}, inst)
		if n := count(t, w.db.Pool, `SELECT count(*) FROM proc WHERE pk_job = $1`, job); n > 0 {
			t.Errorf("cycle %d: %d procs of the killed job left: %s", c, n, w.procRows(t, job))
		}
		w.succeeded(t, beside, time.Minute, inst)
		w.clearScripts()
		t.Logf("cycle %d: killed a job of %d frames after %d launches (%s); %d running frames stopped", c, len(frames),
			k, w.frameStates(t, frames), stopped)
	}
	w.finish(t, inst)
}

// cuebotStopFrames is the rest of Cuebot's kill of a job: each RUNNING frame
// stopped WAITING with KillExitStatus (the proc let go of it), killed on its
// host's RQD, and its proc deleted (Cuebot does so on the killed frame's
// report). It returns how many it stopped.
func (w *faultWorld) cuebotStopFrames(t *testing.T, job string) int {
	t.Helper()
	ctx := t.Context()
	n := 0
	for _, f := range frameIDs(t, w.db, `SELECT pk_frame FROM frame WHERE pk_job = $1 AND str_state = 'RUNNING'`, job) {
		p, err := w.sim.ProcOfFrame(ctx, f)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // it completed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		err = w.sim.StopFrame(ctx, f, "WAITING", cuebotsim.KillExitStatus)
		if errors.Is(err, cuebotsim.ErrStale) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		var host string
		if err := w.db.Pool.QueryRow(ctx, `SELECT str_name FROM host WHERE pk_host = $1`, p.Host).Scan(&host); err != nil {
			t.Fatal(err)
		}
		if srv := w.rqd(host); srv != nil {
			// RQD answers NOT_FOUND for a frame it no longer runs: Cuebot
			// goes on either way.
			_, _ = srv.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: f, Message: "job killed"})
		}
		if err := w.sim.DeleteProc(ctx, p.ID); err != nil && !errors.Is(err, cuebotsim.ErrStale) {
			t.Fatal(err)
		}
	}
	return n
}

// A host locked (str_lock_state) or taken DOWN (host_stat.str_state) while a
// job books on its allocation: nothing is booked on it after the change's
// commit, the frames it runs complete (none killed), and the job goes on on
// the allocation's other host. The host is opened again after each cycle.
func (w *faultWorld) hostTaken(t *testing.T, what, take, restore string) {
	inst := w.start(t)
	hosts := w.hostNames(t)
	for c := range cycles(1, 20) {
		host := hosts[(c+1)%len(hosts)]
		srv := w.rqd(host)
		frames := w.launch(t, w.allocTag(t, host), 32)
		waitFor(t, time.Minute, "frames running on "+host, func() bool { return len(srv.Running()) >= 4 }, inst)
		snap := w.cuebotChange(t, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, take, host)
			return err
		})
		running := srv.Running()
		w.succeeded(t, frames, time.Minute, inst)
		if n := w.bookedAfter(t, snap, `b.host_id = (SELECT pk_host FROM host WHERE str_name = $2)`, host); n > 0 {
			t.Errorf("cycle %d: %d bookings on %s committed after it was %s", c, n, host, what)
		}
		for _, r := range w.runs() {
			if r.host == host && slices.Contains(running, r.frame) && r.killed {
				t.Errorf("cycle %d: frame %s, running on %s when it was %s, was killed", c, r.frame, host, what)
			}
		}
		t.Logf("cycle %d: %s %s with %d frames running on it; %d frames done", c, host, what, len(running), len(frames))
		exec1(t, w.db.Pool, restore, host)
	}
	w.finish(t, inst)
}

// A show's burst lowered under load: a job keeps an allocation busy (16
// cores) when Cuebot lowers the show's burst there to 3 cores. No booking
// may commit with the subscription above its burst (read in the booking's
// own transaction, which holds the subscription row: exact, whatever the
// clock), the frames running stay (none killed), the audit calls what runs
// over the burst left-legal and nothing illegal, and once the usage came
// down bookings go on under the burst. The burst is raised back for the
// job to finish.
func (w *faultWorld) burstLowered(t *testing.T) {
	exec1(t, w.db.Pool, `
		CREATE TABLE e2e.over_burst (proc_id text, cores bigint, burst bigint);
		CREATE FUNCTION e2e.over_burst() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
		BEGIN
			INSERT INTO e2e.over_burst
			SELECT n.proc_id, s.int_cores, s.int_burst
			  FROM new_rows n JOIN proc p ON p.pk_proc = n.proc_id JOIN host h ON h.pk_host = p.pk_host
			  JOIN subscription s ON s.pk_show = p.pk_show AND s.pk_alloc = h.pk_alloc
			 WHERE s.int_cores > s.int_burst;
			RETURN NULL;
		END $$;
		CREATE TRIGGER e2e_over_burst AFTER INSERT ON cuesched.launch_outbox
			REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION e2e.over_burst();`)
	inst := w.start(t)
	const burst = 300
	for c := range cycles(1, 20) {
		tag := allocTags[c%len(allocTags)]
		frames := w.launch(t, tag, 48)
		const sub = `SELECT s.pk_subscription FROM subscription s JOIN alloc a ON a.pk_alloc = s.pk_alloc
			JOIN show sh ON sh.pk_show = s.pk_show WHERE sh.str_name = 'stress' AND a.str_tag = $1`
		const usage = `SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p JOIN host h ON h.pk_host = p.pk_host
			JOIN alloc a ON a.pk_alloc = h.pk_alloc WHERE a.str_tag = $1`
		waitFor(t, time.Minute, "the allocation busy", func() bool { return count(t, w.db.Pool, usage, tag) >= 1200 }, inst)
		snap := w.cuebotChange(t, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE subscription SET int_burst = $2 WHERE pk_subscription = (`+sub+`)`, tag, burst)
			return err
		})
		running := w.runningFrames(t, frames)
		leftLegal := 0
		waitFor(t, time.Minute, "bookings under the lowered burst", func() bool {
			vs := w.auditSample(t)
			for _, v := range vs {
				if v.Check == "cap-burst" {
					leftLegal++
				}
			}
			return w.bookedAfter(t, snap, `b.frame_id = ANY($2)`, frames) >= 4
		}, inst)
		if leftLegal == 0 {
			t.Errorf("cycle %d: the audit never saw the frames running over the lowered burst", c)
		}
		exec1(t, w.db.Pool, `UPDATE subscription SET int_burst = 9000000 WHERE pk_subscription = (`+sub+`)`, tag)
		w.succeeded(t, frames, time.Minute, inst)
		if n := count(t, w.db.Pool, `SELECT count(*) FROM e2e.over_burst`); n > 0 {
			t.Errorf("cycle %d: %d bookings committed with their subscription above its burst", c, n)
		}
		if n := countFunc(w.runs(), func(r run) bool { return slices.Contains(running, r.frame) && r.killed }); n > 0 {
			t.Errorf("cycle %d: %d runs going on when the burst came down were killed", c, n)
		}
		t.Logf("cycle %d: burst lowered to %d with %d frames running; %d audits saw them over it (left-legal)", c,
			burst, len(running), leftLegal)
	}
	w.finish(t, inst)
}

// auditSample runs the audit once and fails the test on an illegal finding
// other than the counters (which run high for a moment after a release).
func (w *faultWorld) auditSample(t *testing.T) []audit.Violation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	vs, err := audit.Snapshot(ctx, w.db.Pool, audit.Options{})
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	for _, v := range audit.Illegals(vs) {
		if !onlyCounters([]audit.Violation{v}) {
			t.Errorf("audit: %s", v)
		}
	}
	return vs
}

// runningFrames are the frames of frames RUNNING now.
func (w *faultWorld) runningFrames(t *testing.T, frames []string) []string {
	t.Helper()
	return frameIDs(t, w.db, `SELECT pk_frame FROM frame WHERE pk_frame = ANY($1) AND str_state = 'RUNNING'`, frames)
}

// A frame released in Cuebot's two steps, with a pause between: a job fills
// one host (its manual tag) with more frames waiting; each completion is
// recorded one at a time, the frame stopped, then a pause, then the proc
// deleted. While a stopped frame's proc still holds the host's last free
// capacity, nothing may book on it: no booking on the host is committed
// between the stop and the delete. The counters come back (the audit at the
// end) and nothing doubles (ran once, one booking per frame version).
func (w *faultWorld) twoStepRelease(t *testing.T) {
	inst := w.start(t)
	const pause = 100 * time.Millisecond
	for c := range cycles(1, 20) {
		tag := fastTags[c%len(fastTags)]
		var host string
		if err := w.db.Pool.QueryRow(t.Context(), `SELECT h.str_name FROM host_tag t JOIN host h USING (pk_host)
			WHERE t.str_tag = $1`, tag).Scan(&host); err != nil {
			t.Fatal(err)
		}
		frames := w.launchPaused(t, tag, 16)
		var mu sync.Mutex
		windows, bad := 0, 0
		stop := w.serveHeld(t, frames, func(rf *rqd.RunFrame) {
			// While frames wait, let cuesched fill the host again first, so
			// that the stop leaves it no free capacity.
			full := time.Now().Add(5 * time.Second)
			for time.Now().Before(full) && w.ctx.Err() == nil {
				var waiting, idle int64
				if err := w.db.Pool.QueryRow(w.ctx, `SELECT (SELECT count(*) FROM frame WHERE pk_frame = ANY($1)
						AND str_state = 'WAITING'), (SELECT int_cores_idle FROM host WHERE str_name = $2)`, frames, host).
					Scan(&waiting, &idle); err != nil || waiting == 0 || idle < 100 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			w.report(rf, "SUCCEEDED", 0, func() {
				// Between the two transactions: the host's capacity is
				// still held by the proc; if no other proc left it any,
				// nothing may book on it until the delete.
				ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
				defer cancel()
				var before string
				var idle int64
				if err := w.db.Pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text, int_cores_idle FROM host
					WHERE str_name = $1`, host).Scan(&before, &idle); err != nil {
					return
				}
				time.Sleep(pause)
				var n int64
				if err := w.db.Pool.QueryRow(ctx, `SELECT count(*) FROM e2e.booking b
					WHERE b.host_id = (SELECT pk_host FROM host WHERE str_name = $1)
					  AND NOT pg_visible_in_snapshot(b.xid, $2::pg_snapshot)`, host, before).Scan(&n); err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if idle < 100 {
					windows++
					if n > 0 {
						bad++
					}
				}
			})
		})
		w.unpause(t, frames)
		w.succeeded(t, frames, time.Minute, inst)
		stop()
		if bad > 0 {
			t.Errorf("cycle %d: %d of %d releases in two steps saw a booking on %s's held capacity", c, bad, windows, host)
		}
		t.Logf("cycle %d: %d frames on %s released in two steps, %d of them with the host full between", c,
			len(frames), host, windows)
	}
	w.finish(t, inst)
}

// procRows describes the job's proc rows and their frames, for a failure
// to say which booking left them.
func (w *faultWorld) procRows(t *testing.T, job string) string {
	t.Helper()
	var s string
	if err := w.db.Pool.QueryRow(t.Context(), `SELECT coalesce(string_agg(format('proc %s frame %s (%s, %s, exit %s, version %s) host %s booked %s',
			p.pk_proc, p.pk_frame, f.str_name, f.str_state, f.int_exit_status, f.int_version, p.pk_host, p.ts_booked), '; '), 'none')
		  FROM proc p LEFT JOIN frame f ON f.pk_frame = p.pk_frame WHERE p.pk_job = $1`, job).Scan(&s); err != nil {
		return fmt.Sprintf("(read the procs: %v)", err)
	}
	return s
}
