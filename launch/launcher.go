package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/dispatch"
)

// Defaults of Config.
const (
	defaultWorkers    = 64
	defaultKillRetry  = 2 * time.Second
	defaultKillGiveUp = 2 * time.Minute
	// DefaultReportGrace is Config.ReportGrace's default: RQD reports a
	// completion as the frame exits, and Cuebot records it within seconds
	// even when its report queue is busy.
	DefaultReportGrace = 30 * time.Second
	specChunk          = 1000 // bookings whose launch fields one query reads
	dbTimeout          = 30 * time.Second
)

// Config configures a Launcher. Zero fields take defaults.
type Config struct {
	Pool *pgxpool.Pool
	RQD  *RQDClient // may be nil only with DryRun
	// Workers is how many launches run at once (config LaunchWorkers).
	Workers int
	// DryRun launches nothing: Resolve leaves pending rows alone.
	DryRun bool
	// KillRetry is the pause between kills of a frame whose launch got no
	// verdict; KillGiveUp is how long such a host may stay unreachable
	// before the booking is released anyway.
	KillRetry, KillGiveUp time.Duration
	// ReportGrace is how long a frame's completion report may take to
	// reach the database after the frame exits. A booking whose launch had
	// no verdict and whose frame RQD no longer runs may have run to its end
	// with the report on its way: it is released or launched again only
	// after this, so that a recorded completion wins (the frame runs once).
	// <= 0: DefaultReportGrace.
	ReportGrace time.Duration
	Metrics     *Metrics     // nil: unregistered metrics
	Logger      *slog.Logger // nil: slog.Default()
	// OnSettled is called once for every booking the launcher finishes with,
	// after its outcome is in the database. It must not block. A released
	// booking's frame is WAITING again: requeue its layer.
	OnSettled func(Settled)
}

// SettledResult is how a booking ended for the launcher.
type SettledResult string

const (
	// SettledLaunched: RQD runs the frame (it accepted it, or said it already ran
	// it). The outbox row stays until Cuebot deletes the proc.
	SettledLaunched SettledResult = "launched"
	// SettledReleased: the launch failed for certain (or the frame was killed
	// first); the booking was undone and the frame is WAITING again.
	SettledReleased SettledResult = "released"
	// SettledGone: the proc no longer holds the frame (Cuebot released it, or the
	// booking was already undone): there is nothing to launch or release.
	SettledGone SettledResult = "gone"
)

// Settled is one booking's outcome.
type Settled struct {
	Result SettledResult
	// Reason, for Released: refused, killed, unreachable, breaker, bad-spec;
	// for Launched: already-running, kill-refused or launched-elsewhere (an
	// unanswered launch of a booking another instance launched) when not a
	// plain launch.
	Reason                            string
	ProcID, FrameID, HostID, HostName string
	LayerID, JobID                    string // of a Released booking
	ClusterID                         int32
}

// item is one booking on its way through the launcher.
type item struct {
	proc, frame, hostID, hostName string
	version                       int32 // frame.int_version the booking left
	cluster                       int32
	unsure                        bool // a launch went unanswered: kill before anything else
	// inherited: read from the outbox on start or takeover. Its owner may
	// have sent it and died before the verdict: ask RQD before launching.
	inherited bool
	spec      launchSpec
}

// Launcher launches committed bookings on RQD from a bounded pool of
// workers, so that slow hosts never hold up booking, records each outcome in
// the launch outbox and releases bookings whose launch failed (compensation,
// release.go). Submit hands it a commit's bookings; Resolve hands it the
// rows a cluster's previous owner left unresolved, and Run resolves those of
// a batch whose commit outcome is unknown until the database answers. Run
// does the work until its context ends; bookings still in flight then stay
// in the outbox for the next Resolve.
type Launcher struct {
	cfg  Config
	pool *pgxpool.Pool
	rqd  *RQDClient
	m    *Metrics
	log  *slog.Logger

	mu       sync.Mutex
	queue    []*item
	inflight map[string]bool // proc ids submitted and not settled
	wake     chan struct{}

	markMu   sync.Mutex
	marks    []markReq
	markWake chan struct{}

	kills sync.WaitGroup // kill-then-release and inherited-launch goroutines

	resolveMu   sync.Mutex
	unresolved  map[int32]struct{} // clusters Run must resolve (ResolveLater)
	resolveWake chan struct{}
}

type markReq struct {
	it     *item
	reason string
}

// The Booker hands its commits to a Launcher.
var _ dispatch.Launcher = (*Launcher)(nil)

// New returns a Launcher; call Run to start it.
func New(cfg Config) *Launcher {
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.KillRetry <= 0 {
		cfg.KillRetry = defaultKillRetry
	}
	if cfg.KillGiveUp <= 0 {
		cfg.KillGiveUp = defaultKillGiveUp
	}
	if cfg.ReportGrace <= 0 {
		cfg.ReportGrace = DefaultReportGrace
	}
	l := &Launcher{cfg: cfg, pool: cfg.Pool, rqd: cfg.RQD, m: cfg.Metrics, log: cfg.Logger,
		inflight: map[string]bool{}, wake: make(chan struct{}, 1), markWake: make(chan struct{}, 1),
		unresolved: map[int32]struct{}{}, resolveWake: make(chan struct{}, 1)}
	if l.m == nil {
		l.m = NewMetrics(nil)
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	return l
}

// Submit queues a commit's bookings for launching. It never blocks. A dry
// run launches nothing.
func (l *Launcher) Submit(bs []dispatch.Booking) {
	if l.cfg.DryRun {
		return
	}
	items := make([]*item, len(bs))
	for i, b := range bs {
		items[i] = &item{proc: b.ProcID, frame: b.Frame.ID, hostID: b.Host.ID, hostName: b.HostName,
			version: b.Version, cluster: b.ClusterID}
	}
	l.enqueue(items)
}

// enqueue adds items not already in flight and wakes the feeder.
func (l *Launcher) enqueue(items []*item) int {
	l.mu.Lock()
	n := 0
	for _, it := range items {
		if l.inflight[it.proc] {
			continue
		}
		l.inflight[it.proc] = true
		l.queue = append(l.queue, it)
		n++
	}
	l.m.outboxPending.Set(float64(len(l.inflight)))
	l.mu.Unlock()
	signal(l.wake)
	return n
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Resolve takes over the outbox rows of the clusters that are still
// unresolved (a crash between commit and launch, or an owner that died
// mid-launch): pending rows are launched (RQD refuses a frame it already
// runs, which counts as launched; one it does not run is launched only
// after ReportGrace, as it may have run to its end unreported), unsure rows
// are killed first and then released. It returns how many rows it queued;
// Run carries them out.
func (l *Launcher) Resolve(ctx context.Context, clusterIDs []int32) (int, error) {
	return l.resolve(ctx, clusterIDs, true)
}

// resolve is Resolve; inherited says whether the pending rows may have been
// sent by an owner that died (start, takeover) or were certainly never sent
// (this instance's own bookings whose commit outcome was unknown).
func (l *Launcher) resolve(ctx context.Context, clusterIDs []int32, inherited bool) (int, error) {
	rows, err := l.pool.Query(ctx, `
		SELECT proc_id, frame_id, frame_version, host_id, host_name, cluster_id, state
		  FROM cuesched.launch_outbox
		 WHERE cluster_id = ANY($1) AND state IN ('pending', 'unsure')
		 ORDER BY proc_id`, clusterIDs)
	if err != nil {
		return 0, fmt.Errorf("resolve outbox of clusters %v: %w", clusterIDs, err)
	}
	var items []*item
	for rows.Next() {
		it := &item{}
		var state string
		if err := rows.Scan(&it.proc, &it.frame, &it.version, &it.hostID, &it.hostName, &it.cluster, &state); err != nil {
			rows.Close()
			return 0, fmt.Errorf("resolve outbox of clusters %v: %w", clusterIDs, err)
		}
		it.unsure = state == "unsure"
		it.inherited = inherited && !it.unsure
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("resolve outbox of clusters %v: %w", clusterIDs, err)
	}
	if l.cfg.DryRun {
		if len(items) > 0 {
			l.log.Warn("dry run: leaving unresolved launches alone", "clusters", clusterIDs, "rows", len(items))
		}
		return 0, nil
	}
	n := l.enqueue(items)
	l.log.Info("resolving launch outbox", "clusters", clusterIDs, "rows", len(items), "queued", n)
	return n, nil
}

// Run launches until ctx ends, then waits for its workers. Call it once.
func (l *Launcher) Run(ctx context.Context) error {
	if l.rqd == nil && !l.cfg.DryRun {
		return errors.New("launcher: no RQD client")
	}
	jobs := make(chan *item)
	var workers sync.WaitGroup
	for range l.cfg.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for it := range jobs {
				l.launch(ctx, it)
			}
		}()
	}
	stopMarks, marksDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(marksDone)
		l.markLoop(ctx, stopMarks)
	}()
	resolveDone := make(chan struct{})
	go func() {
		defer close(resolveDone)
		l.resolveLoop(ctx)
	}()

	l.feed(ctx, jobs)
	close(jobs)
	workers.Wait()
	<-resolveDone
	l.kills.Wait()
	close(stopMarks)
	<-marksDone
	return nil
}

// How long one try of resolveLoop may take, and its pauses between tries.
const (
	resolveTry      = 10 * time.Second
	resolveRetryMin = 100 * time.Millisecond
	resolveRetryMax = 5 * time.Second
)

// ResolveLater has Run resolve the cluster's outbox, trying until it
// succeeds: a batch whose commit outcome is unknown may have committed, and
// then only its outbox rows remember its bookings. Rows still unresolved
// when Run stops stay in the outbox for the cluster's next owner. It never
// blocks.
func (l *Launcher) ResolveLater(clusterID int32) {
	l.resolveMu.Lock()
	l.unresolved[clusterID] = struct{}{}
	l.resolveMu.Unlock()
	signal(l.resolveWake)
}

// resolveLoop resolves what ResolveLater asks for until ctx ends, pausing
// longer after each failure.
func (l *Launcher) resolveLoop(ctx context.Context) {
	pause := resolveRetryMin
	for {
		l.resolveMu.Lock()
		ids := slices.Sorted(maps.Keys(l.unresolved))
		clear(l.unresolved)
		l.resolveMu.Unlock()
		if len(ids) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-l.resolveWake:
				continue
			}
		}
		tctx, cancel := context.WithTimeout(ctx, resolveTry)
		_, err := l.resolve(tctx, ids, false)
		cancel()
		if err == nil {
			pause = resolveRetryMin
			continue
		}
		// Taken out before the try, so that a request arriving during it
		// is not lost with the success of a read that began before its
		// commit; back in for the next try.
		l.resolveMu.Lock()
		for _, id := range ids {
			l.unresolved[id] = struct{}{}
		}
		l.resolveMu.Unlock()
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("resolve outbox after an unknown commit; retrying", "clusters", ids, "in", pause, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		pause = min(2*pause, resolveRetryMax)
	}
}

// feed reads the launch fields of queued bookings, a chunk per query, and
// hands them to the workers.
func (l *Launcher) feed(ctx context.Context, jobs chan<- *item) {
	for {
		l.mu.Lock()
		batch := l.queue
		l.queue = nil
		l.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
				continue
			}
		}
		for len(batch) > 0 {
			chunk := batch[:min(len(batch), specChunk)]
			dctx, cancel := context.WithTimeout(ctx, dbTimeout)
			gone, err := loadSpecs(dctx, l.pool, chunk)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Error("read launch fields; retrying", "bookings", len(chunk), "err", err)
				if !l.pause(ctx) {
					return
				}
				continue
			}
			batch = batch[len(chunk):]
			for _, it := range chunk {
				switch {
				case gone[it.proc]:
					l.settle(it, SettledGone, "")
				case it.unsure:
					l.startKill(ctx, it)
				case it.inherited:
					l.startInherited(ctx, it)
				default:
					select {
					case jobs <- it:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}
}

// awaitReport waits up to ReportGrace for Cuebot to record the completion
// of a frame RQD no longer runs: it looks every KillRetry whether the
// booking's proc still holds the frame and returns early once it does not.
// The caller then goes on as before; its next step finds the booking gone
// if it is. False when ctx ended first.
func (l *Launcher) awaitReport(ctx context.Context, it *item) bool {
	l.log.Debug("frame not running after a launch with no verdict; waiting for its completion report",
		"proc", it.proc, "frame", it.frame, "host", it.hostName, "grace", l.cfg.ReportGrace)
	deadline := time.Now().Add(l.cfg.ReportGrace)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		if !l.sleep(ctx, min(left, l.cfg.KillRetry)) {
			return false
		}
		dctx, cancel := context.WithTimeout(ctx, dbTimeout)
		var holds bool
		err := l.pool.QueryRow(dctx, `SELECT EXISTS (SELECT 1 FROM proc WHERE pk_proc = $1 AND pk_frame = $2)`,
			it.proc, it.frame).Scan(&holds)
		cancel()
		if err == nil && !holds {
			return true
		}
	}
}

// pause waits KillRetry; false when ctx ended first.
func (l *Launcher) pause(ctx context.Context) bool {
	return l.sleep(ctx, l.cfg.KillRetry)
}

// sleep waits d; false when ctx ended first.
func (l *Launcher) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// launch sends one booking to its host and acts on the outcome.
func (l *Launcher) launch(ctx context.Context, it *item) {
	if !l.rqd.Allowed(it.hostName) {
		l.releaseAndSettle(ctx, it, "breaker")
		return
	}
	it.spec.StartTime = time.Now()
	rf, err := buildRunFrame(it.spec)
	if err != nil {
		// Bad rows: RQD could never run it. Release it and say why; the
		// loop decides whether to book it again.
		l.m.specErrors.Inc()
		l.log.Error("cannot launch booking", "proc", it.proc, "frame", it.frame, "err", err)
		l.releaseAndSettle(ctx, it, "bad-spec")
		return
	}
	r := l.rqd.Launch(ctx, it.hostName, rf)
	if ctx.Err() != nil {
		return // shutting down: the row stays for the next Resolve
	}
	l.m.launches.WithLabelValues(r.Outcome.String()).Inc()
	l.m.launchDuration.WithLabelValues(r.Outcome.String()).Observe(r.Elapsed.Seconds())
	switch r.Outcome {
	case Launched:
		l.mark(it, "")
	case AlreadyRunning:
		l.mark(it, "already-running")
	// Each failure at debug only: a failing host fails every booking sent
	// to it, and the owner logs them per host and interval
	// (RQDHooks.OnFailure).
	case Refused:
		l.log.Debug("launch refused; releasing the booking", "proc", it.proc, "frame", it.frame, "host", it.hostName, "err", r.Err)
		l.releaseAndSettle(ctx, it, "refused")
	default: // Ambiguous
		l.log.Debug("launch unanswered; killing before releasing", "proc", it.proc, "frame", it.frame, "host", it.hostName, "err", r.Err)
		// A row another instance marked launched (it took the cluster over
		// while this one hung, and relaunched the booking) is left so: the
		// frame runs under this booking, and killing it would lose the run.
		// Until the row answers, nothing is killed: a peer may have
		// relaunched the booking meanwhile (this instance was stopped past
		// its lease and its sessions ended), and killing blind would end
		// the peer's run.
		var launched bool
		for {
			dctx, cancel := context.WithTimeout(ctx, dbTimeout)
			err := l.pool.QueryRow(dctx, `WITH u AS (
					UPDATE cuesched.launch_outbox SET state = 'unsure', attempts = attempts + 1, updated_at = current_timestamp
					 WHERE proc_id = $1 AND state <> 'launched' RETURNING 1)
				SELECT NOT EXISTS (SELECT 1 FROM u)
				   AND EXISTS (SELECT 1 FROM cuesched.launch_outbox WHERE proc_id = $1 AND state = 'launched')`,
				it.proc).Scan(&launched)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return // the row stays pending for the next Resolve
			}
			l.log.Warn("record unsure launch; retrying", "proc", it.proc, "err", err)
			if !l.pause(ctx) {
				return
			}
		}
		if launched {
			l.log.Debug("launch unanswered, but launched by another instance; keeping the booking", "proc", it.proc,
				"frame", it.frame, "host", it.hostName)
			l.settle(it, SettledLaunched, "launched-elsewhere")
			return
		}
		l.startKill(ctx, it)
	}
}

// startInherited launches a booking read from the outbox on start or
// takeover once RQD has said whether it runs the frame. If RQD runs it
// under this booking's proc, the booking is kept as launched and not sent
// again: the frame could end between the status and a relaunch, and RQD
// would then run it a second time. If RQD does not run it, the frame may
// have run to its end under this booking with its completion report still
// on its way, so the launch waits ReportGrace (and finds the booking gone
// if Cuebot recorded the completion meanwhile). An RQD that does not
// answer, or runs the frame for another proc, gets the launch at once, which
// meets the same host and is handled as any launch.
func (l *Launcher) startInherited(ctx context.Context, it *item) {
	l.kills.Add(1)
	go func() {
		defer l.kills.Done()
		running, err := l.rqd.running(ctx, it.hostName)
		if ctx.Err() != nil {
			return
		}
		proc, runs := running[it.frame]
		if err == nil && runs && proc == it.proc {
			l.log.Debug("inherited booking runs on its host; keeping it", "proc", it.proc, "frame", it.frame,
				"host", it.hostName)
			l.mark(it, "already-running")
			return
		}
		if err == nil && !runs {
			if !l.awaitReport(ctx, it) {
				return
			}
		}
		it.inherited = false
		l.mu.Lock()
		l.queue = append(l.queue, it) // still in flight: enqueue would skip it
		l.mu.Unlock()
		signal(l.wake)
	}()
}

func (l *Launcher) startKill(ctx context.Context, it *item) {
	l.kills.Add(1)
	go func() {
		defer l.kills.Done()
		l.killThenRelease(ctx, it)
	}()
}

// killThenRelease settles a booking whose launch may or may not have
// started the frame: the booking is released only once RQD confirms the
// frame is not running, or the host stayed unreachable for KillGiveUp. A
// frame found not running may have run to its end with its completion
// report on its way: the release waits ReportGrace, and finds the booking
// gone if Cuebot recorded the completion meanwhile. RQD's status, asked
// before each kill, tells a frame not running from one killed where the
// kill's answer cannot (the Python RQD acknowledges both alike).
func (l *Launcher) killThenRelease(ctx context.Context, it *item) {
	giveUp := time.Now().Add(l.cfg.KillGiveUp)
	msg := "cuesched: launch of proc " + it.proc + " went unanswered; clearing the booking"
	for {
		running, serr := l.rqd.running(ctx, it.hostName)
		_, runs := running[it.frame]
		r := l.rqd.kill(ctx, it.hostName, it.frame, msg)
		if ctx.Err() != nil {
			return
		}
		if r.Outcome == killed && serr == nil && !runs {
			r.Outcome = notRunning
		}
		past := !time.Now().Before(giveUp)
		switch {
		case r.Outcome == killed:
			l.releaseAndSettle(ctx, it, "killed")
			return
		case r.Outcome == notRunning:
			if !l.awaitReport(ctx, it) {
				return
			}
			l.releaseAndSettle(ctx, it, "killed")
			return
		case r.Outcome == killUnreachable && past:
			l.log.Warn("host unreachable; releasing the booking unconfirmed", "proc", it.proc, "frame", it.frame,
				"host", it.hostName, "after", l.cfg.KillGiveUp)
			l.releaseAndSettle(ctx, it, "unreachable")
			return
		case r.Outcome == killError && past:
			// The host answers and will not kill: the frame may well run,
			// so the booking stays and Cuebot's host reports decide.
			l.log.Warn("host refuses to kill an unconfirmed frame; keeping the booking", "proc", it.proc,
				"frame", it.frame, "host", it.hostName, "err", r.Err)
			l.mark(it, "kill-refused")
			return
		}
		if !l.pause(ctx) {
			return
		}
	}
}

// releaseAndSettle runs the compensation, retrying while the database
// fails, and reports the outcome.
func (l *Launcher) releaseAndSettle(ctx context.Context, it *item, reason string) {
	for {
		s, err := l.release(ctx, it)
		if err == nil {
			if s.Result == SettledReleased {
				l.m.compensations.WithLabelValues(reason).Inc()
			}
			s.Reason = reason
			l.finish(s)
			return
		}
		if ctx.Err() != nil {
			return
		}
		l.log.Error("release booking; retrying", "proc", it.proc, "frame", it.frame, "err", err)
		if !l.pause(ctx) {
			return
		}
	}
}

// mark queues a launched booking for the next outbox update.
func (l *Launcher) mark(it *item, reason string) {
	l.markMu.Lock()
	l.marks = append(l.marks, markReq{it, reason})
	l.markMu.Unlock()
	signal(l.markWake)
}

// markLoop records launched bookings in the outbox, as many per statement
// as have finished meanwhile (one commit, not one per launch).
func (l *Launcher) markLoop(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case <-l.markWake:
			if l.flushMarks(ctx) {
				continue
			}
			t := time.NewTimer(l.cfg.KillRetry) // the database failed: wait before retrying
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				l.flushMarks(ctx)
				return
			}
		case <-stop:
			l.flushMarks(ctx)
			return
		}
	}
}

// flushMarks writes the queued marks; on failure they stay queued.
func (l *Launcher) flushMarks(ctx context.Context) bool {
	l.markMu.Lock()
	marks := l.marks
	l.marks = nil
	l.markMu.Unlock()
	if len(marks) == 0 {
		return true
	}
	ids := make([]string, len(marks))
	for i, m := range marks {
		ids[i] = m.it.proc
	}
	// Outlives ctx: the final flush runs after it ended.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dbTimeout)
	defer cancel()
	if _, err := l.pool.Exec(wctx, `UPDATE cuesched.launch_outbox
			SET state = 'launched', attempts = attempts + 1, updated_at = current_timestamp
			WHERE proc_id = ANY($1)`, ids); err != nil {
		l.log.Error("record launches", "bookings", len(ids), "err", err)
		l.markMu.Lock()
		l.marks = append(marks, l.marks...)
		l.markMu.Unlock()
		signal(l.markWake)
		return false
	}
	for _, m := range marks {
		l.settle(m.it, SettledLaunched, m.reason)
	}
	return true
}

// OnSettled sets LauncherConfig.OnSettled, for a listener built after the
// launcher (the loop). Call it before Run.
func (l *Launcher) OnSettled(fn func(Settled)) { l.cfg.OnSettled = fn }

// settle reports an item's outcome from its own fields.
func (l *Launcher) settle(it *item, r SettledResult, reason string) {
	l.finish(Settled{Result: r, Reason: reason, ProcID: it.proc, FrameID: it.frame, HostID: it.hostID,
		HostName: it.hostName, ClusterID: it.cluster})
}

func (l *Launcher) finish(s Settled) {
	l.mu.Lock()
	delete(l.inflight, s.ProcID)
	l.m.outboxPending.Set(float64(len(l.inflight)))
	l.mu.Unlock()
	if l.cfg.OnSettled != nil {
		l.cfg.OnSettled(s)
	}
}
