package dispatch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/match"
)

// Defaults of BookerConfig.
const (
	defaultBatchMin = 1
	defaultBatchMax = 500
)

// Cluster is the cluster a batch books in.
type Cluster struct {
	ID  int32       // the cluster's number: the second int of its booking lock
	Key cluster.Key // for logs
	// Leaving is closed once the caller stops booking the cluster (its
	// claim is being handed over): a batch still waiting for the
	// instance's other batches then gives up before it begins, and its
	// placements come back in BatchResult.Untried. nil: never.
	Leaving <-chan struct{}
}

// BookerConfig configures a Booker. Zero fields take defaults.
type BookerConfig struct {
	Pool *pgxpool.Pool
	// Fence proves ownership of the cluster in every booking transaction;
	// nil: a single owner of every cluster (singleOwner).
	Fence Fence
	// BatchMin and BatchMax bound the adaptive batch size (config BatchMin,
	// BatchMax).
	BatchMin, BatchMax int
	// DryRun books in the database and launches nothing: outbox rows are
	// written as 'dry' and nothing is handed to Launcher.
	DryRun bool
	// Launcher receives every commit's bookings; nil: the caller launches.
	Launcher Launcher
	// HostAllowed, when set, drops placements on hosts it refuses (an RQD
	// breaker that is open: launch.RQDClient.Allowed).
	HostAllowed func(hostName string) bool
	// PositionWait bounds how long a batch whose commit position could not
	// be read tries to read a later one (laterPosition); zero: 30s.
	PositionWait time.Duration
	// Ours, when set, records each booking transaction's id before its
	// COMMIT.
	Ours      *Ours
	Metrics   *Metrics           // nil: unregistered metrics
	Scheduler *metrics.Scheduler // OpenCue-named metrics; nil: not counted
	Logger    *slog.Logger       // nil: slog.Default()
}

// Launcher takes the bookings a Booker committed (package launch implements
// it). Both calls must return at once: launching happens after the commit,
// never inside Book.
type Launcher interface {
	// Submit hands over a commit's bookings, whose outbox rows the commit
	// wrote.
	Submit([]Booking)
	// ResolveLater asks for the cluster's outbox to be read back once the
	// database answers: a batch whose commit outcome is unknown
	// (ErrCommitUnknown) may have committed, and then only its outbox rows
	// remember its bookings.
	ResolveLater(clusterID int32)
}

// Booker commits placements: guarded transactions of batches of one
// cluster each, or of several clusters' batches that waited for each other
// in its gate (DESIGN.md, "What a booking writes"). It is safe for
// concurrent use by several goroutines booking different clusters (or the
// same one: the cluster's advisory lock lets one in and turns the others
// away as busy).
type Booker struct {
	cfg   BookerConfig
	pool  *pgxpool.Pool
	fence Fence
	sizer *sizer
	m     *Metrics
	log   *slog.Logger
	gate  gate // orders the instance's batches that share rows before they begin

	// hookBeforeWrite, set by tests, runs inside the transaction between the
	// re-check and the writes: it stands in for a writer that slipped past
	// the locks, so that a guard trigger raises.
	hookBeforeWrite func(ctx context.Context, conn *pgxpool.Conn, attempt int) error
	// inDatabase, set by the benchmark, lets batches sharing rows wait for
	// each other in the database, as they did before the gate, to measure
	// what the gate saves.
	inDatabase   bool
	positionWait time.Duration // bounds laterPosition
}

// NewBooker returns a Booker.
func NewBooker(cfg BookerConfig) *Booker {
	if cfg.BatchMin <= 0 {
		cfg.BatchMin = defaultBatchMin
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = defaultBatchMax
	}
	b := &Booker{cfg: cfg, pool: cfg.Pool, fence: cfg.Fence, sizer: newSizer(cfg.BatchMin, cfg.BatchMax),
		m: cfg.Metrics, log: cfg.Logger, positionWait: cfg.PositionWait}
	// Two batches' worth: enough that the batches waiting behind one book
	// together, short enough that a transaction holds its hosts no longer
	// than two batches did one after another.
	b.gate.most = 2 * cfg.BatchMax
	if b.positionWait <= 0 {
		b.positionWait = defaultPositionWait
	}
	if b.fence == nil {
		b.fence = singleOwner{}
	}
	if b.m == nil {
		b.m = NewMetrics(nil)
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b
}

// BatchSize is how many placements the next transaction of the cluster
// takes; Book splits longer lists, so a caller may plan this many at a time.
func (b *Booker) BatchSize(clusterID int32) int { return b.sizer.size(clusterID) }

// Booking is a committed placement.
type Booking struct {
	match.Placement
	ProcID    string // proc.pk_proc, RQD's resource_id
	ClusterID int32
	HostName  string // host.str_name as locked (where RQD is reached)
	// Version is frame.int_version after the booking; releasing the booking
	// is guarded by it.
	Version    int32
	ShowName   string
	EligibleAt time.Time // the later of frame.ts_eligible and ts_stopped; zero when both are NULL
	CommitAt   time.Time // when the booking's COMMIT returned
	// Xid is the booking transaction's id as the replication stream names
	// it: the host cache releases the booked capacity it holds when the
	// stream applies that transaction (Hosts.Booked).
	Xid uint32
}

// DropReason says why the booking's re-check dropped a placement. The values
// are metric labels.
type DropReason string

// Why placements are dropped.
const (
	DropBadPlacement   DropReason = "bad-placement"   // malformed: no layer, no cores, a frame of another layer
	DropDuplicate      DropReason = "duplicate"       // the same frame placed twice in one call
	DropFrameGone      DropReason = "frame-gone"      // the frame (or its job's resource row) no longer exists
	DropFrameChanged   DropReason = "frame-changed"   // not WAITING at the version matching read
	DropStartAfter     DropReason = "start-after"     // layer.ts_start_after lies in the future
	DropShowUnmanaged  DropReason = "show-unmanaged"  // the show is not scheduler-managed or not active
	DropJobNotPending  DropReason = "job-not-pending" // the job is not PENDING
	DropJobPaused      DropReason = "job-paused"
	DropJobMoved       DropReason = "job-moved"   // the job's show, folder or department is not the one matched
	DropHostGone       DropReason = "host-gone"   // the host no longer exists
	DropHostLocked     DropReason = "host-locked" // not OPEN
	DropHostDown       DropReason = "host-down"   // host_stat.str_state not UP
	DropHostMoved      DropReason = "host-moved"  // the host's allocation is not the one matched
	DropHostBreaker    DropReason = "host-breaker"
	DropHostCapacity   DropReason = "host-capacity" // the host's idle resources no longer cover it
	DropReserved       DropReason = "reserved"      // another layer reserved the host, and the frame is no backfill
	DropNoSubscription DropReason = "no-subscription"
	DropBurst          DropReason = "burst"      // the subscription's burst
	DropJobCap         DropReason = "job-cap"    // job_resource max cores or GPUs
	DropFolderCap      DropReason = "folder-cap" // folder_resource max cores or GPUs
	DropLimit          DropReason = "limit"      // a limit record's maximum of running frames
	DropGuard          DropReason = "guard"      // the transaction lost to a guard twice; try again later
)

// Drop is a placement the booking did not commit, and why. The caller gives
// its capacity back and requeues its frame.
type Drop struct {
	Placement match.Placement
	Reason    DropReason
	Detail    string
}

// BatchResult is what one Book call did.
type BatchResult struct {
	Booked  []Booking
	Dropped []Drop
	// Busy: another transaction was booking the cluster; Deferred holds the
	// placements not tried. Retry them later (the cluster's lock is never
	// waited on).
	Busy     bool
	Deferred []match.Placement
	// Untried holds the placements of batches that never began: the
	// cluster was left (Cluster.Leaving) while they waited for the
	// instance's other batches. Nothing was attempted for them.
	Untried []match.Placement
	// LSN is pg_current_wal_lsn() read right after the last commit (or
	// later, when the connection failed first): hold the booked capacity as
	// checked out until the replication stream has passed it. Zero when
	// nothing was committed or no position could be read (laterPosition).
	LSN pglogrepl.LSN
}

// Book commits placements of one cluster in batches of at most BatchSize
// placements each, in the order given (earlier placements win a host or a
// cap the later ones also want); a batch that waited for this Booker's
// others is booked in one transaction with those that waited with it. A
// placement that no longer fits the locked rows is dropped with its reason;
// nothing is waited on but the rows themselves. On an error, what was committed before it is in the
// result and the rest is in Deferred.
func (b *Booker) Book(ctx context.Context, c Cluster, placements []match.Placement) (BatchResult, error) {
	var res BatchResult
	ps := make([]match.Placement, 0, len(placements))
	seen := make(map[string]bool, len(placements))
	for _, p := range placements {
		if seen[p.Frame.ID] {
			res.drop(b.m, p, DropDuplicate, "frame placed twice")
			continue
		}
		seen[p.Frame.ID] = true
		ps = append(ps, p)
	}
	for len(ps) > 0 {
		n := min(len(ps), b.sizer.size(c.ID))
		busy, left, err := b.bookBatch(ctx, c, ps[:n], &res)
		if err != nil {
			res.Deferred = append(res.Deferred, ps...)
			return res, err
		}
		if left {
			res.Untried = append(res.Untried, ps...)
			break
		}
		if busy {
			res.Busy = true
			res.Deferred = append(res.Deferred, ps...)
			break
		}
		ps = ps[n:]
	}
	return res, nil
}

func (r *BatchResult) drop(m *Metrics, p match.Placement, reason DropReason, detail string) {
	r.Dropped = append(r.Dropped, Drop{Placement: p, Reason: reason, Detail: detail})
	m.drops.WithLabelValues(string(reason)).Inc()
}

// bookBatch books one batch of c: it waits in the gate for this Booker's
// batches sharing its rows, then either runs the transaction of itself and
// the batches that waited with it (runGroup) or is booked in another's.
func (b *Booker) bookBatch(ctx context.Context, c Cluster, ps []match.Placement,
	res *BatchResult) (busy, left bool, _ error) {
	m := &member{c: c, ps: ps}
	rows := batchRows(ps)
	if b.inDatabase {
		rows = nil
	}
	arrived := time.Now()
	tk, err := b.gate.enter(ctx, m, rows, c.Leaving)
	if errors.Is(err, errLeft) {
		return false, true, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("book %d placements in cluster %d (%s): wait for this instance's batches "+
			"sharing rows: %w", len(ps), c.ID, c.Key, err)
	}
	b.m.gateWait.Observe(time.Since(arrived).Seconds())
	if tk.lead == nil {
		b.runGroup(ctx, tk)
	} else {
		<-tk.done
	}
	o := m.out
	switch {
	case o.left:
		return false, true, nil
	case o.err != nil:
		if errors.Is(o.err, ErrCommitUnknown) && b.cfg.Launcher != nil && !b.cfg.DryRun {
			b.cfg.Launcher.ResolveLater(c.ID)
		}
		return false, false, fmt.Errorf("book %d placements in cluster %d (%s): %w", len(ps), c.ID, c.Key, o.err)
	case o.busy:
		b.m.busy.Inc()
		b.sizer.contended(c.ID)
		return true, false, nil
	case o.lost != "":
		for _, p := range ps {
			res.drop(b.m, p, DropGuard, o.lost)
		}
		return false, false, nil
	}
	for _, d := range o.dropped {
		res.drop(b.m, d.Placement, d.Reason, d.Detail)
	}
	if len(o.booked) > 0 {
		res.Booked = append(res.Booked, o.booked...)
		b.afterCommit(o.booked)
		res.LSN = max(res.LSN, o.lsn)
	}
	b.sizer.committed(c.ID, len(ps))
	return false, false, nil
}

// member is one batch of one cluster in a booking transaction, and what
// the transaction did with it.
type member struct {
	c   Cluster
	ps  []match.Placement
	out outcome
}

// outcome is what became of a member's batch. At most one of left (never
// begun), err (fenced, or the transaction failed), busy, lost (rolled back
// twice: every placement dropped) holds; otherwise the batch was tried, and
// booked and dropped say how.
type outcome struct {
	left    bool
	err     error
	busy    bool
	lost    string
	booked  []Booking
	dropped []Drop
	lsn     pglogrepl.LSN
}

// settled: nothing more to try for the batch (left, fenced or busy, or the
// transaction failed).
func (o outcome) settled() bool { return o.left || o.busy || o.err != nil }

// runGroup books a leader's batch and those that waited with it (its
// group) in one transaction, once more from fresh values if a guard or a
// lock conflict rolled it back; it sets every member's outcome, gives the
// batches back to the gate and wakes the members booked for others.
func (b *Booker) runGroup(ctx context.Context, tk *ticket) {
	ms := []*member{tk.m}
	for _, f := range tk.group {
		ms = append(ms, f.m)
	}
	defer func() {
		b.gate.leave(tk)
		for _, f := range tk.group {
			close(f.done)
		}
	}()
	// A cluster handed over while its batch waited is not booked: the
	// handover waited only for bookings under way in the database.
	for _, m := range ms {
		select {
		case <-m.c.Leaving:
			m.out = outcome{left: true}
		default:
		}
	}
	for attempt := 1; ; attempt++ {
		var live []*member
		for _, m := range ms {
			if !m.out.settled() {
				live = append(live, m)
			}
		}
		if len(live) == 0 {
			return
		}
		g, err := b.attempt(ctx, live, attempt)
		if err != nil {
			for _, m := range live {
				if !m.out.settled() {
					m.out = outcome{err: err}
				}
			}
			return
		}
		if g.lost != "" {
			b.m.guardLosses.WithLabelValues(g.lost).Inc()
			for _, m := range live {
				b.sizer.contended(m.c.ID)
			}
			b.log.Warn("booking transaction rolled back", "clusters", clusterIDs(live), "reason", g.lost,
				"attempt", attempt, "placements", g.placements, "err", g.lostErr)
			if attempt < 2 {
				continue
			}
			for _, m := range live {
				if !m.out.settled() {
					m.out = outcome{lost: g.lost}
				}
			}
			return
		}
		if g.placements > 0 {
			b.m.batchSize.Observe(float64(g.placements))
			b.m.batchDuration.Observe(g.took.Seconds())
		}
		lsn := g.lsn
		if g.booked > 0 && g.lsnErr != nil {
			lsn = b.laterPosition(ctx, clusterIDs(live), g.booked, g.lsnErr)
		}
		for _, m := range live {
			m.out.lsn = lsn
		}
		return
	}
}

func clusterIDs(ms []*member) []int32 {
	ids := make([]int32, len(ms))
	for i, m := range ms {
		ids[i] = m.c.ID
	}
	return ids
}

// afterCommit counts the bookings and hands them to the launcher.
func (b *Booker) afterCommit(bs []Booking) {
	if s := b.cfg.Scheduler; s != nil {
		perShow := map[string]int{}
		for _, bk := range bs {
			perShow[bk.ShowName]++
			if !bk.EligibleAt.IsZero() {
				s.TimeToBook.Observe(max(0, bk.CommitAt.Sub(bk.EligibleAt).Seconds()))
			}
		}
		for show, n := range perShow {
			s.FramesDispatched.WithLabelValues(show).Add(float64(n))
		}
	}
	if b.cfg.Launcher != nil && !b.cfg.DryRun {
		b.cfg.Launcher.Submit(bs)
	}
}

// groupResult is one transaction's outcome besides its members' own: lost
// (a rollback to retry), or a commit's position.
type groupResult struct {
	lost    string // guard, deadlock, serialization, lock-timeout, mismatch
	lostErr error
	// placements the transaction tried (fenced and busy members' not
	// counted) and booked.
	placements, booked int
	lsn                pglogrepl.LSN
	lsnErr             error         // the commit's position could not be read: lsn is zero
	took               time.Duration // begin to commit
}

// txTimeout bounds one booking transaction: its locks are held by rows
// that only short transactions hold, so a longer wait means trouble.
const txTimeout = 30 * time.Second

// errMismatch: a write touched other rows than the re-check promised.
var errMismatch = errors.New("write touched other rows than the re-check promised")

// lossReason classifies an error that rolls a booking back and is worth one
// retry from fresh values; "" for any other error.
func lossReason(err error) string {
	if errors.Is(err, errMismatch) {
		return "mismatch"
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return ""
	}
	switch pe.Code {
	case "P0001": // raise_exception: Cuebot's guard triggers
		return "guard"
	case "40P01":
		return "deadlock"
	case "40001":
		return "serialization"
	case "55P03":
		return "lock-timeout"
	}
	return ""
}

// attempt is one booking transaction of the members' batches, in three
// round trips: the begin with each cluster's lock and fence and the row
// locks and re-check reads; the writes; the commit with its WAL position. A
// member whose cluster is fenced or busy is settled at the begin and the
// others go on; the placements of the rest are re-checked and written as
// one batch, in the members' order (an earlier member wins a host or a cap
// a later one also wants).
//
// The rows of every member's placements are locked in the begin's round
// trip, before it is known whether each member's cluster is this booking's.
// A busy or fenced member is rare (a handover, a second booking of the same
// cluster): its rows are then locked for nothing until the transaction ends,
// and may first be waited for behind the transaction that holds its cluster.
// In exchange every booking saves a round trip, on a machine where each one
// waits for a core that the stream and the matching also want.
func (b *Booker) attempt(ctx context.Context, ms []*member, attempt int) (groupResult, error) {
	var res groupResult
	ctx, cancel := context.WithTimeout(ctx, txTimeout)
	defer cancel()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	began := time.Now()

	// Every member's placements, for the locks (queueLockAndRead names
	// each row once).
	var all []match.Placement
	for _, m := range ms {
		all = append(all, m.ps...)
	}
	var xid8 string
	locked, fenced := make([]bool, len(ms)), make([]error, len(ms))
	bt := &pgx.Batch{}
	bt.Queue(`BEGIN`)
	// The transaction's id tells the host cache which streamed transaction
	// is this booking's echo.
	bt.Queue(`SELECT pg_current_xact_id()::text`).QueryRow(func(r pgx.Row) error { return r.Scan(&xid8) })
	for i, m := range ms {
		bt.Queue(`SELECT pg_try_advisory_xact_lock($1, $2)`, cluster.BookingLock, m.c.ID).
			QueryRow(func(r pgx.Row) error { return r.Scan(&locked[i]) })
		b.queueFence(bt, m.c.ID, &fenced[i])
	}
	st := queueLockAndRead(bt, all)
	tx := &bookingTx{conn: conn, open: true}
	defer tx.rollback(ctx)
	if err := conn.SendBatch(ctx, bt).Close(); err != nil {
		if r := lossReason(err); r != "" {
			res.lost, res.lostErr = r, fmt.Errorf("lock rows: %w", err)
			return res, nil
		}
		return res, fmt.Errorf("begin and lock rows: %w", err)
	}
	// pgoutput names transactions by the low 32 bits of their 64-bit id.
	// Parsed before the commit: an error after it would lose the bookings.
	xid, err := strconv.ParseUint(xid8, 10, 64)
	if err != nil {
		return res, fmt.Errorf("read transaction id %q: %w", xid8, err)
	}
	b.cfg.Ours.add(uint32(xid))

	// The live members' placements in order, each frame once; owner says
	// whose each frame is.
	var ps []match.Placement
	owner := map[string]*member{}
	for i, m := range ms {
		m.out = outcome{}
		switch {
		case fenced[i] != nil:
			m.out = outcome{err: fmt.Errorf("begin: %w", fenced[i])}
			continue
		case !locked[i]:
			m.out = outcome{busy: true}
			continue
		}
		for _, p := range m.ps {
			if _, ok := owner[p.Frame.ID]; ok {
				m.out.dropped = append(m.out.dropped, Drop{Placement: p, Reason: DropDuplicate,
					Detail: "frame placed by another cluster's batch in the same transaction"})
				continue
			}
			owner[p.Frame.ID] = m
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return res, nil
	}
	res.placements = len(ps)

	kept, dropped := recheck(ps, st, b.cfg.HostAllowed)
	for _, d := range dropped {
		m := owner[d.Placement.Frame.ID]
		m.out.dropped = append(m.out.dropped, d)
	}
	if len(kept) == 0 {
		return res, nil // nothing to write; the deferred rollback lets the locks go
	}
	for i := range kept {
		kept[i].cluster = owner[kept[i].p.Frame.ID].c.ID
	}
	if h := b.hookBeforeWrite; h != nil {
		if err := h(ctx, conn, attempt); err != nil {
			return res, err
		}
	}
	if err := b.write(ctx, conn, kept); err != nil {
		if r := lossReason(err); r != "" {
			res.lost, res.lostErr = r, err
			return res, nil
		}
		return res, err
	}
	committed, lsn, err := tx.commit(ctx)
	commitAt := time.Now()
	res.took = commitAt.Sub(began)
	switch {
	case errors.Is(err, errCommitRolledBack):
		return res, err
	case !committed:
		if err := b.commitOutcome(ctx, err, kept); err != nil {
			return res, err
		}
		// It committed, but its connection is gone.
		res.lsnErr = fmt.Errorf("read commit position: %w", err)
	case err != nil:
		res.lsnErr = err
	default:
		res.lsn = lsn
	}
	// Committed: from here on nothing may fail the batch, or its bookings
	// would be neither launched nor resolved.
	res.booked = len(kept)
	for _, k := range kept {
		m := owner[k.p.Frame.ID]
		m.out.booked = append(m.out.booked, Booking{Placement: k.p, ProcID: k.procID, ClusterID: k.cluster,
			HostName: k.hostName, Version: k.version + 1, ShowName: k.showName, EligibleAt: k.eligible,
			CommitAt: commitAt, Xid: uint32(xid)})
	}
	return res, nil
}

// bookingTx is a booking's transaction on its connection, begun by the
// first queued statement of the begin's batch (BEGIN and the row locks go
// in one round trip, as COMMIT and the read of its position do).
type bookingTx struct {
	conn *pgxpool.Conn
	open bool
}

// sqlCommit commits and reads the WAL position after the commit, in one
// simple query: the SELECT runs only once the COMMIT has succeeded, and
// needs no statement prepared on the connection first.
const sqlCommit = "COMMIT;\nSELECT pg_current_wal_lsn()::text"

// commit commits the transaction and reads the WAL position after its
// commit in the same round trip. committed says whether the COMMIT
// succeeded; when it did not, err is why (a server error rolled it back; a
// broken connection leaves the outcome unknown: commitOutcome). A committed
// transaction whose position could not be read returns err too.
func (tx *bookingTx) commit(ctx context.Context) (committed bool, _ pglogrepl.LSN, _ error) {
	var pos string
	mrr := tx.conn.Conn().PgConn().Exec(ctx, sqlCommit)
	if mrr.NextResult() {
		ct, err := mrr.ResultReader().Close()
		switch {
		case err != nil:
		case ct.String() != "COMMIT":
			// PostgreSQL answers COMMIT with ROLLBACK for a failed
			// transaction; nothing may have failed before it here.
			tx.open = false
			_ = mrr.Close()
			return false, 0, errCommitRolledBack
		default:
			tx.open, committed = false, true
		}
	}
	if committed && mrr.NextResult() {
		rr := mrr.ResultReader()
		for rr.NextRow() {
			pos = string(rr.Values()[0])
		}
		_, _ = rr.Close() // its error is the MultiResultReader's too
	}
	err := mrr.Close()
	if !committed {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			tx.open = false // a failed COMMIT ends the transaction
		}
		if err == nil { // no answer to the COMMIT at all: its outcome is unknown
			err = errors.New("commit: the server did not answer the COMMIT")
		}
		return false, 0, err
	}
	if err != nil {
		return true, 0, fmt.Errorf("read commit position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(pos)
	if err != nil {
		return true, 0, fmt.Errorf("read commit position %q: %w", pos, err)
	}
	return true, lsn, nil
}

// errCommitRolledBack: PostgreSQL answered the booking's COMMIT with
// ROLLBACK: nothing was committed.
var errCommitRolledBack = errors.New("commit: the transaction was rolled back")

// rollback ends a transaction that did not commit. It must run even when
// ctx has ended, or the connection would go back to the pool mid-transaction
// (the pool closes a connection left in one).
func (tx *bookingTx) rollback(ctx context.Context) {
	if !tx.open {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := tx.conn.Exec(rctx, `ROLLBACK`); err == nil {
		tx.open = false
	}
}

// queueFence queues the proof that this instance owns the cluster, and keeps
// a failed proof in *fenced instead of failing the whole begin: one cluster
// handed over does not stop the batches of the others in the transaction.
// Any other error (the database's) fails the begin as before.
func (b *Booker) queueFence(bt *pgx.Batch, clusterID int32, fenced *error) {
	n := len(bt.QueuedQueries)
	b.fence.Queue(bt, clusterID)
	for _, qq := range bt.QueuedQueries[n:] {
		fn := qq.Fn
		if fn == nil {
			continue
		}
		qq.Fn = func(br pgx.BatchResults) error {
			err := fn(br)
			if errors.Is(err, ErrFenced) {
				*fenced = err
				return nil
			}
			return err
		}
	}
}

// readPosition reads the current WAL position.
func readPosition(ctx context.Context, pool *pgxpool.Pool) (pglogrepl.LSN, error) {
	var s string
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		return 0, fmt.Errorf("read commit position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("read commit position %q: %w", s, err)
	}
	return lsn, nil
}

// How long laterPosition tries, each try's deadline and its pauses.
const (
	defaultPositionWait = 30 * time.Second
	positionTry         = 5 * time.Second
	positionRetryMin    = 100 * time.Millisecond
	positionRetryMax    = 2 * time.Second
)

// laterPosition stands in for the position of a commit that could not be
// read (the connection failed after COMMIT): any position read later is at
// or past the commit, so holding the booked capacity until the stream has
// passed it is safe, only longer. It tries on fresh connections for
// positionWait, then gives up with zero, as it does once ctx ends.
//
// Zero holds nothing: until the stream echoes the booking, its host is
// offered with the capacity it had before, and a placement that counted on
// it is dropped by the booking's re-check against the locked host row, so
// it costs a wasted attempt, never a double booking (the guards live in the
// transaction). Holding without a position instead (until the echo of the
// transaction alone) could hold for good: a stream that resyncs from a
// snapshot, as it does when the database went away, the likely reason the
// position was lost, never delivers that echo.
func (b *Booker) laterPosition(ctx context.Context, clusters []int32, bookings int, cause error) pglogrepl.LSN {
	b.log.Warn("booking committed but its commit position was not read; reading a later one",
		"clusters", clusters, "bookings", bookings, "err", cause)
	giveUp := time.Now().Add(b.positionWait)
	pause := positionRetryMin
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, positionTry)
		lsn, err := readPosition(tctx, b.pool)
		cancel()
		if err == nil {
			return lsn
		}
		if ctx.Err() != nil || !time.Now().Add(pause).Before(giveUp) {
			b.log.Warn("no commit position; the stream's host rows are the truth for these bookings",
				"clusters", clusters, "bookings", bookings, "tries", try, "err", err)
			return 0
		}
		b.log.Warn("read commit position; retrying", "clusters", clusters, "try", try, "in", pause, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		pause = min(2*pause, positionRetryMax)
	}
}

// ErrCommitUnknown: the connection failed during COMMIT and it could not be
// told whether the batch committed. If it did, its outbox rows wait for
// the launcher's Resolve: the Booker's Launcher (BookerConfig.Launcher) is
// asked to try it until it succeeds (ResolveLater); without one, resolve the
// cluster before booking it again.
var ErrCommitUnknown = errors.New("booking commit outcome unknown")

// commitOutcome tells what a failed COMMIT did: nil when the batch committed
// after all. A COMMIT the server answered with an error rolled back; one cut
// off by a broken connection may have committed, so the outbox (written in
// the same transaction) is asked on a fresh connection.
func (b *Booker) commitOutcome(ctx context.Context, err error, kept []keptPlacement) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Errorf("commit: %w", err)
	}
	ids := make([]string, len(kept))
	for i, k := range kept {
		ids[i] = k.procID
	}
	// The booking's own deadline may be what cut the COMMIT off.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var n int
	if qerr := b.pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox WHERE proc_id = ANY($1)`, ids).Scan(&n); qerr != nil {
		return fmt.Errorf("commit: %w (%w: %v)", err, ErrCommitUnknown, qerr)
	}
	if n == 0 {
		return fmt.Errorf("commit: %w (the batch did not commit)", err)
	}
	b.log.Warn("booking commit failed on the connection but committed", "bookings", len(kept), "err", err)
	return nil
}

// newUUID returns a random (version 4) UUID in its text form: the key of a
// new proc, chosen before the INSERT so that the outbox row and the result
// need no RETURNING.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// sortedUnique returns the distinct non-empty values of keys, sorted.
func sortedUnique(keys []string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > 0 && out[0] == "" {
		out = out[1:]
	}
	return out
}
