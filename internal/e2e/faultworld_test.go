package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// The fault suite (issue 12) runs real `cuesched run` processes that launch
// what they book: every host of a small seeded farm has a fake RQD (real
// gRPC) on its own loopback address, at one port the instances are given
// with --rqd-port. Each fake runs a frame for its host's duration, then
// reports the completion as Cuebot completes frames of managed shows
// (cuebotsim), so capacity frees and every frame ends SUCCEEDED. Every case
// ends with the same checks (faultWorld.finish): every frame SUCCEEDED,
// nothing stranded, the invariant audit, each booking run once, and no
// replication slot or session left once the instances stop.

// chaosOn reports whether the full-size fault cycles run (make chaos).
func chaosOn() bool { return os.Getenv("CUESCHED_CHAOS") == "1" }

// cycles is n in the default suite, full under CUESCHED_CHAOS=1.
func cycles(n, full int) int {
	if chaosOn() {
		return full
	}
	return n
}

// faultTags are the layer tags the fault cases book: those the farm's
// hosts carry (faultHosts hosts of seed.Stress: three allocations, a
// manual tag per host).
var faultTags = []string{"stress_a", "stress_b", "stress_c", "pool1", "pool2", "pool3", "pool4", "pool5", "pool6"}

const (
	faultHosts = 6
	faultCores = 8 // per host, in cores
)

// instanceFlags are what every instance of the suite runs with: a short
// lease so takeovers come within seconds, an RQD deadline short enough
// that a hung RQD costs a case seconds, not the default 10 s, and a report
// grace to match the Cuebot stand-in, which records a completion report
// within milliseconds.
var instanceFlags = []string{"--lease", "2s", "--rqd-timeout", "2s", "--report-grace", "3s"}

// faultWorld is one case's database, farm of fake RQDs and the Cuebot
// stand-in completing frames.
type faultWorld struct {
	t      *testing.T
	db     *pgtest.DB
	seeded *seed.Seeded
	sim    *cuebotsim.Sim
	port   int
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	rqds     map[string]*fakerqd.Server // the live fake RQD of each host name
	dead     []deadRQD                  // fakes closed under their frames (an RQD that died)
	complErr error                      // the first error of Cuebot's stand-in (completions, host reports)
	reports  sync.WaitGroup
	held     map[string]bool // frames whose completion reports are held
	parked   []*rqd.RunFrame // the reports held
	jobs     int
	started  int // instances started, for their names

	// hostOptions, when set, are the options of a host's fake RQD instead
	// of the suite's (rqdOptions).
	hostOptions func(host string) fakerqd.Options
}

// deadRQD is a closed fake and when it died: its open runs ended then.
type deadRQD struct {
	srv *fakerqd.Server
	at  time.Time
}

func newFaultWorld(t *testing.T) *faultWorld {
	t.Helper()
	return newFaultWorldOn(t, ownDB(t))
}

// newFaultWorldOn is newFaultWorld on db, a fresh database of the Full
// template: one whose DSN names a standby too, say.
func newFaultWorldOn(t *testing.T, db *pgtest.DB) *faultWorld {
	t.Helper()
	farm := seed.Stress(31, faultHosts, 0)
	for i := range farm.Hosts {
		farm.Hosts[i].Cores, farm.Hosts[i].Mem = faultCores*seed.Core, 64*seed.GB
	}
	return newWorldOf(t, db, farm, 31, nil)
}

// newWorldOf is a world on db holding farm (seeded with key seed n), whose
// fake RQDs run with the options hostOptions gives each host name, or the
// suite's when it is nil.
func newWorldOf(t *testing.T, db *pgtest.DB, farm *seed.Farm, n uint64,
	hostOptions func(w *faultWorld, host string) fakerqd.Options) *faultWorld {
	t.Helper()
	s, err := seed.Load(t.Context(), db.Pool, farm, n)
	if err != nil {
		t.Fatal(err)
	}
	recordBookings(t, db.Pool)
	ctx, cancel := context.WithCancel(context.Background())
	w := &faultWorld{t: t, db: db, seeded: s, sim: &cuebotsim.Sim{Pool: db.Pool}, ctx: ctx, cancel: cancel,
		rqds: map[string]*fakerqd.Server{}}
	if hostOptions != nil {
		w.hostOptions = func(host string) fakerqd.Options { return hostOptions(w, host) }
	}
	t.Cleanup(w.close)
	w.startRQDs(farm.Hosts)
	w.reports.Add(1)
	go w.reportHosts()
	return w
}

// reportInterval is how often the live RQDs' hosts report to Cuebot's
// stand-in: well within --host-ping-max-age (5 minutes), which a case
// running longer would otherwise pass, leaving no host offered.
const reportInterval = 20 * time.Second

// reportHosts is the live RQDs' host reports until the world closes: the
// hosts' ping time moves on; a dead RQD's host reports nothing.
func (w *faultWorld) reportHosts() {
	defer w.reports.Done()
	tick := time.NewTicker(reportInterval)
	defer tick.Stop()
	failed := 0 // reports failed in a row: a database unreachable for a while (a failover) fails one
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-tick.C:
		}
		var names []string
		w.mu.Lock()
		for name := range w.rqds {
			names = append(names, name)
		}
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		_, err := w.db.Pool.Exec(ctx, `UPDATE host_stat SET ts_ping = current_timestamp
			WHERE pk_host IN (SELECT pk_host FROM host WHERE str_name = ANY($1))`, names)
		cancel()
		if err == nil {
			failed = 0
		} else if failed++; failed >= 3 && w.ctx.Err() == nil {
			w.mu.Lock()
			if w.complErr == nil {
				w.complErr = fmt.Errorf("host reports: %d in a row failed: %w", failed, err)
			}
			w.mu.Unlock()
		}
	}
}

// startRQDs starts a fake RQD for each host on its loopback address, all at
// one port: the first picks a free one and the others take it (another
// test's farm may hold it on some address: then all start again).
func (w *faultWorld) startRQDs(hosts []seed.Host) {
	w.t.Helper()
	var err error
	for range 10 {
		if err = w.tryRQDs(hosts); err == nil {
			return
		}
		w.closeRQDs()
	}
	w.t.Fatalf("start the fake RQDs: %v", err)
}

func (w *faultWorld) tryRQDs(hosts []seed.Host) error {
	w.port = 0
	for _, h := range hosts {
		srv, err := fakerqd.Start(net.JoinHostPort(h.Name, strconv.Itoa(w.port)), w.rqdOptions(h.Name))
		if err != nil {
			return err
		}
		if w.port == 0 {
			_, p, _ := net.SplitHostPort(srv.Addr())
			w.port, _ = strconv.Atoi(p)
		}
		w.mu.Lock()
		w.rqds[h.Name] = srv
		w.mu.Unlock()
	}
	return nil
}

// rqdOptions: a host runs each frame for 300 to 900 ms (by its address), then
// reports it done (unless the world has hostOptions).
func (w *faultWorld) rqdOptions(host string) fakerqd.Options {
	if w.hostOptions != nil {
		return w.hostOptions(host)
	}
	last := host[strings.LastIndexByte(host, '.')+1:]
	n, _ := strconv.Atoi(last)
	return fakerqd.Options{Cores: faultCores * seed.Core, CompleteAfter: time.Duration(300+200*(n%4)) * time.Millisecond,
		OnComplete: func(_ string, rf *rqd.RunFrame) { w.complete(rf) }}
}

// complete is Cuebot handling RQD's completion report: it finds the proc by
// the report's resource id and ignores a report whose proc is gone or holds
// another frame (a booking released meanwhile), then stops the frame
// SUCCEEDED and deletes the proc in its two transactions. As RQD sends a
// report again until Cuebot takes it, a step that fails (the database
// restarting or failing over) is tried again for a minute; a step whose
// commit went unanswered is found done on the next try.
func (w *faultWorld) complete(rf *rqd.RunFrame) {
	w.mu.Lock()
	if w.held[rf.GetFrameId()] {
		w.parked = append(w.parked, rf)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	var c completion
	deadline := time.Now().Add(time.Minute)
	for try := 0; ; try++ {
		err := w.completeStep(rf, &c, try > 0)
		if err == nil || errors.Is(err, cuebotsim.ErrStale) || w.ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			w.mu.Lock()
			if w.complErr == nil {
				w.complErr = fmt.Errorf("complete frame %s (%d tries): %w", rf.GetFrameId(), try+1, err)
			}
			w.mu.Unlock()
			return
		}
		select {
		case <-w.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// completion is how far a completion report got.
type completion struct {
	proc    string // the proc found for the report
	stopped bool   // its frame stopped SUCCEEDED
}

// completeStep takes the completion from where c says it stands; again
// says an earlier try failed, maybe after its commit.
func (w *faultWorld) completeStep(rf *rqd.RunFrame, c *completion, again bool) error {
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	if c.proc == "" {
		p, err := w.sim.ProcOfFrame(ctx, rf.GetFrameId())
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && p.ID != rf.GetResourceId()) {
			return nil
		}
		if err != nil {
			return err
		}
		c.proc = p.ID
	}
	if !c.stopped {
		err := w.sim.StopFrame(ctx, rf.GetFrameId(), "SUCCEEDED", 0)
		if errors.Is(err, cuebotsim.ErrStale) && again {
			// The failed try may have stopped it: its proc let go of it.
			var unlinked bool
			if qerr := w.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM proc WHERE pk_proc = $1 AND pk_frame IS NULL)`,
				c.proc).Scan(&unlinked); qerr != nil {
				return qerr
			}
			if unlinked {
				err = nil
			}
		}
		if err != nil {
			return err
		}
		c.stopped = true
	}
	err := w.sim.DeleteProc(ctx, c.proc)
	if errors.Is(err, cuebotsim.ErrStale) && again {
		return nil // the failed try deleted it
	}
	return err
}

// holdReports holds the completion reports of the frames (a Cuebot slow to
// record them) until release is called, which records them.
func (w *faultWorld) holdReports(frames []string) (release func()) {
	w.mu.Lock()
	if w.held == nil {
		w.held = map[string]bool{}
	}
	for _, f := range frames {
		w.held[f] = true
	}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		for _, f := range frames {
			delete(w.held, f)
		}
		parked := w.parked
		w.parked = nil
		w.mu.Unlock()
		for _, rf := range parked {
			w.complete(rf)
		}
	}
}

// servers are the live fake RQDs.
func (w *faultWorld) servers() []*fakerqd.Server {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*fakerqd.Server, 0, len(w.rqds))
	for _, s := range w.rqds {
		out = append(out, s)
	}
	return out
}

// all is every fake RQD the case started, live or dead.
func (w *faultWorld) all() []*fakerqd.Server {
	out := w.servers()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.dead {
		out = append(out, d.srv)
	}
	return out
}

// statuses is how many status reports every fake RQD, live or dead, was
// asked for.
func (w *faultWorld) statuses() int {
	n := 0
	for _, s := range w.all() {
		n += s.Statuses()
	}
	return n
}

func (w *faultWorld) rqd(host string) *fakerqd.Server {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rqds[host]
}

// kill closes the host's fake RQD as if the daemon died: its frames never
// report.
func (w *faultWorld) killRQD(host string) {
	w.mu.Lock()
	srv := w.rqds[host]
	delete(w.rqds, host)
	w.mu.Unlock()
	srv.Close()
	w.mu.Lock()
	w.dead = append(w.dead, deadRQD{srv, time.Now()})
	w.mu.Unlock()
}

// restartRQD starts the host's RQD again, empty, at the farm's port.
func (w *faultWorld) restartRQD(host string) {
	w.t.Helper()
	srv, err := fakerqd.Start(net.JoinHostPort(host, strconv.Itoa(w.port)), w.rqdOptions(host))
	if err != nil {
		w.t.Fatalf("restart the fake RQD of %s: %v", host, err)
	}
	w.mu.Lock()
	w.rqds[host] = srv
	w.mu.Unlock()
}

func (w *faultWorld) closeRQDs() {
	for _, s := range w.servers() {
		s.Close()
	}
	w.mu.Lock()
	clear(w.rqds)
	w.mu.Unlock()
}

func (w *faultWorld) close() {
	w.cancel()
	w.reports.Wait()
	w.closeRQDs()
}

// start starts a live instance with the suite's flags.
func (w *faultWorld) start(t *testing.T, extra ...string) *instance {
	t.Helper()
	w.mu.Lock()
	w.started++
	name := fmt.Sprintf("fault-%d", w.started)
	w.mu.Unlock()
	return startLive(t, w.db, name, w.port, append(slices.Clone(instanceFlags), extra...)...)
}

// launch launches a job of n one-core frames in one layer tagged tag and
// returns its frames' ids.
func (w *faultWorld) launch(t *testing.T, tag string, n int) []string {
	t.Helper()
	return w.launchJob(t, tag, n, false)
}

func (w *faultWorld) launchJob(t *testing.T, tag string, n int, paused bool) []string {
	t.Helper()
	w.mu.Lock()
	w.jobs++
	name := fmt.Sprintf("fault-job-%04d", w.jobs)
	w.mu.Unlock()
	keys, err := w.seeded.Launch(t.Context(), seed.Job{Name: name, Show: "stress", Priority: 50, MaxCores: 1_000_000,
		Paused: paused, Layers: []seed.Layer{{Name: "render", Frames: n, Cores: seed.Core, Mem: seed.GB, Tags: tag}}})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, n)
	for _, id := range keys.Frames {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// launches are the LaunchFrame calls every fake received for the frames.
func (w *faultWorld) launches(frames []string) []fakerqd.Launch {
	var out []fakerqd.Launch
	for _, s := range w.all() {
		for _, l := range s.Launches() {
			if slices.Contains(frames, l.Frame.GetFrameId()) {
				out = append(out, l)
			}
		}
	}
	return out
}

// succeeded waits until every frame of frames is SUCCEEDED.
func (w *faultWorld) succeeded(t *testing.T, frames []string, within time.Duration, watch ...*instance) {
	t.Helper()
	w.waitSucceeded(t, within, `SELECT count(*) FROM frame WHERE pk_frame = ANY($1) AND str_state <> 'SUCCEEDED'`,
		watch, frames)
}

// waitSucceeded waits for the count query to reach 0, and says what is
// stranded when it does not.
func (w *faultWorld) waitSucceeded(t *testing.T, within time.Duration, sql string, watch []*instance, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for count(t, w.db.Pool, sql, args...) > 0 {
		for _, i := range watch {
			if i.exited() {
				t.Fatalf("waiting for frames to succeed: instance %s exited (%v)", i.name, i.err)
			}
		}
		if time.Now().After(deadline) {
			logWaiting(t, w.db.Pool)
			t.Fatalf("frames not SUCCEEDED after %v: %d (%d stranded beside idle capacity that fits them)",
				within, count(t, w.db.Pool, sql, args...), w.stranded(t))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// sqlStranded counts dispatchable frames beside idle capacity that fits
// them: WAITING frames of PENDING, unpaused jobs of active managed shows
// with a host carrying the layer's tag, OPEN and UP, with the layer's cores
// and memory idle. (The suite's caps are far above its work, so a cap never
// explains a wait.)
const sqlStranded = `
	SELECT count(*) FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = f.pk_job
	  JOIN show s ON s.pk_show = j.pk_show
	 WHERE f.str_state = 'WAITING' AND j.str_state = 'PENDING' AND NOT j.b_paused AND s.b_scheduler_managed
	   AND s.b_active
	   AND EXISTS (SELECT 1 FROM host h JOIN host_stat hs ON hs.pk_host = h.pk_host
	                 JOIN host_tag ht ON ht.pk_host = h.pk_host
	                WHERE lower(ht.str_tag) = lower(l.str_tags) AND h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'
	                  AND h.int_cores_idle >= l.int_cores_min AND h.int_mem_idle >= l.int_mem_min)`

func (w *faultWorld) stranded(t *testing.T) int64 {
	t.Helper()
	return count(t, w.db.Pool, sqlStranded)
}

// finish ends a case: every frame of the database SUCCEEDED (but those of
// jobs Cuebot killed: FINISHED, their frames left as the kill left them),
// nothing stranded, the audit clean, each booking run once; then the
// instances stop (SIGTERM, exit 0) and none leaves a replication slot or a
// session.
func (w *faultWorld) finish(t *testing.T, insts ...*instance) {
	t.Helper()
	w.waitSucceeded(t, 2*time.Minute, `SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
		WHERE f.str_state <> 'SUCCEEDED' AND j.str_state <> 'FINISHED'`, insts)
	if n := w.stranded(t); n > 0 {
		t.Errorf("%d frames stranded beside idle capacity that fits them", n)
	}
	w.mu.Lock()
	err := w.complErr
	w.mu.Unlock()
	if err != nil {
		t.Errorf("Cuebot's stand-in: %v", err)
	}
	auditClean(t, w.db.Pool)
	checkBookings(t, w.db.Pool)
	w.ranOnce(t)
	// Every frame is done: no live RQD may still run one (a run the
	// database forgot).
	for _, s := range w.servers() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		if err := s.WaitIdle(ctx); err != nil {
			t.Errorf("%s still runs %v with every frame SUCCEEDED", s.Addr(), s.Running())
		}
		cancel()
	}
	var apps []string
	for _, i := range insts {
		if !i.exited() {
			i.stop(t)
		}
		apps = append(apps, i.app)
	}
	w.nothingLeft(t, apps)
}

// nothingLeft waits until no replication slot and no session of the
// instances (by application_name, and any cuesched-named session) is left.
func (w *faultWorld) nothingLeft(t *testing.T, apps []string) {
	t.Helper()
	const sessions = `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = ANY($1) OR application_name LIKE 'cuesched%'`
	deadline := time.Now().Add(30 * time.Second)
	for {
		slots := count(t, w.db.Pool, `SELECT count(*) FROM pg_replication_slots`)
		left := count(t, w.db.Pool, sessions, apps)
		if slots == 0 && left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("30 s after the instances stopped: %d replication slots and %d sessions left", slots, left)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// run is one run of a frame on a fake RQD, its end capped at the fake's
// death for an RQD that died under it.
type run struct {
	host      string
	frame     string
	booking   string // the proc id RunFrame carries as resource_id
	start     time.Time
	end       time.Time // zero: still running
	killed    bool
	endedDead bool
}

// runs collects every run of every fake RQD the case started.
func (w *faultWorld) runs() []run {
	w.mu.Lock()
	var dead []deadRQD
	dead = append(dead, w.dead...)
	w.mu.Unlock()
	var out []run
	add := func(s *fakerqd.Server, died time.Time) {
		host, _, _ := net.SplitHostPort(s.Addr())
		for _, r := range s.Runs() {
			x := run{host: host, frame: r.Frame.GetFrameId(), booking: r.Frame.GetResourceId(), start: r.Start,
				end: r.End, killed: r.Killed}
			if x.end.IsZero() && !died.IsZero() {
				x.end, x.endedDead = died, true
			}
			out = append(out, x)
		}
	}
	for _, s := range w.servers() {
		add(s, time.Time{})
	}
	for _, d := range dead {
		add(d.srv, d.at)
	}
	return out
}

// ranOnce checks the runs against the bookings the database recorded: a
// booking (a frame at the version its booking left, identified in RunFrame
// by resource_id, the booking's proc) ran at most once without being
// killed, every run belongs to a committed booking, no two runs of a frame
// overlap, and a frame ran to its end once. Launches RQD answered "already running" (the outbox
// relaunching a booking whose frame runs) are counted and logged, not
// forbidden.
func (w *faultWorld) ranOnce(t *testing.T) {
	t.Helper()
	type booking struct {
		frame   string
		version int32
	}
	rows, err := w.db.Pool.Query(t.Context(), `SELECT proc_id, frame_id, version FROM e2e.booking`)
	if err != nil {
		t.Fatalf("read bookings: %v", err)
	}
	bookings := map[string]booking{}
	for rows.Next() {
		var proc string
		var b booking
		if err := rows.Scan(&proc, &b.frame, &b.version); err != nil {
			t.Fatalf("read bookings: %v", err)
		}
		bookings[proc] = b
	}
	rows.Close()

	runs := w.runs()
	alive := map[string]int{}
	byFrame := map[string][]run{}
	for _, r := range runs {
		b, ok := bookings[r.booking]
		switch {
		case !ok:
			t.Errorf("%s ran frame %s for proc %s, which no booking committed", r.host, r.frame, r.booking)
		case b.frame != r.frame:
			t.Errorf("%s ran frame %s for proc %s, booked for frame %s", r.host, r.frame, r.booking, b.frame)
		}
		if !r.killed {
			alive[r.booking]++
		}
		byFrame[r.frame] = append(byFrame[r.frame], r)
	}
	for proc, n := range alive {
		if n > 1 {
			b := bookings[proc]
			t.Errorf("booking of frame %s at version %d (proc %s) ran %d times unkilled: %s", b.frame, b.version, proc, n,
				describeRuns(runs, func(r run) bool { return r.booking == proc }))
		}
	}
	retries := w.retries(t)
	for frame, rs := range byFrame {
		// A frame ran to its end (not killed, its RQD alive) once per
		// attempt Cuebot recorded: once, and once more per retry (a failed
		// attempt counted in int_retries). Another would be a run of a
		// booking released under it, its completion report ignored.
		if n := countFunc(rs, func(r run) bool { return !r.killed && !r.endedDead && !r.end.IsZero() }); n > 1+retries[frame] {
			t.Errorf("frame %s ran to its end %d times: %s", frame, n, describeRuns(rs, func(run) bool { return true }))
		}
		slices.SortFunc(rs, func(a, b run) int { return a.start.Compare(b.start) })
		for i := 1; i < len(rs); i++ {
			prev := rs[i-1]
			if prev.end.IsZero() || rs[i].start.Before(prev.end) {
				t.Errorf("frame %s ran twice at once: on %s from %s (ended %s) and on %s from %s", frame, prev.host,
					prev.start.Format("15:04:05.000"), prev.end.Format("15:04:05.000"), rs[i].host,
					rs[i].start.Format("15:04:05.000"))
			}
		}
	}
	var launches, already, killed int
	for _, s := range w.all() {
		for _, l := range s.Launches() {
			launches++
			if strings.Contains(l.Message, "already running") {
				already++
			}
		}
	}
	for _, r := range runs {
		if r.killed {
			killed++
		}
	}
	t.Logf("ran once: %d bookings, %d runs (%d killed) of %d frames; %d LaunchFrame calls, %d answered already running",
		len(bookings), len(runs), killed, len(byFrame), launches, already)
}

// retries are the frames Cuebot retried, with int_retries: the failed
// attempts it recorded.
func (w *faultWorld) retries(t *testing.T) map[string]int {
	t.Helper()
	rows, err := w.db.Pool.Query(t.Context(), `SELECT pk_frame, int_retries FROM frame WHERE int_retries > 0`)
	if err != nil {
		t.Fatalf("read retries: %v", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var f string
		var n int
		if err := rows.Scan(&f, &n); err != nil {
			t.Fatalf("read retries: %v", err)
		}
		out[f] = n
	}
	rows.Close()
	return out
}

// describeRuns says where and when the runs that match ran.
func describeRuns(rs []run, match func(run) bool) string {
	var out []string
	for _, r := range rs {
		if !match(r) {
			continue
		}
		end := "running"
		switch {
		case r.killed:
			end = "killed " + r.end.Format("15:04:05.000")
		case r.endedDead:
			end = "died " + r.end.Format("15:04:05.000")
		case !r.end.IsZero():
			end = "ended " + r.end.Format("15:04:05.000")
		}
		out = append(out, fmt.Sprintf("on %s for proc %s from %s, %s", r.host, r.booking, r.start.Format("15:04:05.000"), end))
	}
	return strings.Join(out, "; ")
}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, x := range s {
		if f(x) {
			n++
		}
	}
	return n
}

// killHard sends SIGKILL and waits for the process to end.
func killHard(i *instance) {
	i.signal(syscall.SIGKILL)
	<-i.done
}
