package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/dispatch"
	rqdpb "github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

// outage is a database role of its own for the code under test, which a
// test can lock out of the database, and a pool of that role whose
// connections a test can cut at a chosen statement: a dropped connection
// and an unreachable database, for real, while the test's own superuser
// pool keeps working.
type outage struct {
	t     *testing.T
	admin *pgxpool.Pool
	role  string
	pool  *pgxpool.Pool

	mu     sync.Mutex
	trap   []byte                                   // bytes whose sending springs the trap, once
	spring func(c *trapConn, p []byte) (int, error) // what the write does instead
}

func newOutage(t *testing.T, db *booktest.Seeded) *outage {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	o := &outage{t: t, admin: db.Pool, role: "booker_" + db.Name}
	// Superuser: the role needs every privilege the booking uses, and a
	// superuser is refused a login as anyone else is once NOLOGIN.
	if _, err := o.admin.Exec(ctx, "CREATE ROLE "+o.role+" LOGIN SUPERUSER"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := o.admin.Exec(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = $1`, o.role); err != nil {
			t.Logf("end sessions of %s: %v", o.role, err)
		}
		if _, err := o.admin.Exec(ctx, "DROP ROLE IF EXISTS "+o.role); err != nil {
			t.Logf("drop role %s: %v", o.role, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable",
		db.Cluster.Port, o.role, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &trapConn{Conn: c, o: o}, nil
	}
	if o.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.pool.Close)
	return o
}

// arm makes the next write holding sql (as sent on the wire) run spring
// instead.
func (o *outage) arm(sql []byte, spring func(c *trapConn, p []byte) (int, error)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trap, o.spring = sql, spring
}

func (o *outage) sprung(p []byte) func(c *trapConn, p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.trap == nil || !bytes.Contains(p, o.trap) {
		return nil
	}
	f := o.spring
	o.trap, o.spring = nil, nil
	return f
}

// lock makes the database unreachable for the role: no new session logs in
// and its idle sessions end (a session in a transaction is left to finish).
func (o *outage) lock(ctx context.Context) {
	o.t.Helper()
	if _, err := o.admin.Exec(ctx, "ALTER ROLE "+o.role+" NOLOGIN"); err != nil {
		o.t.Error(err)
	}
	if _, err := o.admin.Exec(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
		WHERE usename = $1 AND state = 'idle'`, o.role); err != nil {
		o.t.Error(err)
	}
}

func (o *outage) unlock(ctx context.Context) {
	o.t.Helper()
	if _, err := o.admin.Exec(ctx, "ALTER ROLE "+o.role+" LOGIN"); err != nil {
		o.t.Error(err)
	}
}

type trapConn struct {
	net.Conn
	o   *outage
	cut atomic.Bool // reads fail: the answers to what was sent are lost
}

func (c *trapConn) Write(p []byte) (int, error) {
	if f := c.o.sprung(p); f != nil {
		// pgx starts reading while a write is slow, as a spring's is.
		c.cut.Store(true)
		return f(c, p)
	}
	return c.Conn.Write(p)
}

func (c *trapConn) Read(p []byte) (int, error) {
	if c.cut.Load() {
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

// logWatch is a slog handler that lets a test wait for a message.
type logWatch struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }
func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

// wait returns once msg has been logged.
func (w *logWatch) wait(ctx context.Context, t *testing.T, msg string) {
	t.Helper()
	for {
		w.mu.Lock()
		seen, ch := slices.Contains(w.msgs, msg), w.changed
		w.mu.Unlock()
		if seen {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("never logged %q: %v", msg, ctx.Err())
		}
	}
}

// outageRig is a one-host farm whose booker and launcher use the outage's
// role.
type outageRig struct {
	db      *booktest.Seeded
	o       *outage
	srv     *fakerqd.Server
	booker  *dispatch.Booker
	logs    *logWatch
	settled *settledLog
	rqd     *RQDClient
	// stopLauncher ends the launcher's Run and returns its error; an error
	// too when Run does not return before ctx ends.
	stopLauncher func(ctx context.Context) error
}

// newOutageRig's booker waits positionWait for a commit position it could
// not read (0: the Booker's default).
func newOutageRig(t *testing.T, frames int, positionWait time.Duration) *outageRig {
	t.Helper()
	r := &outageRig{db: booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, frames, 100)), logs: newLogWatch(), settled: newSettledLog()}
	r.o = newOutage(t, r.db)
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	r.srv = farm.Server(seedName(0) + ":" + itoa(port))
	r.rqd = newRQD(t, port, 5*time.Second)
	m := NewMetrics(nil)
	l := New(Config{Pool: r.o.pool, RQD: r.rqd, OnSettled: r.settled.add, Metrics: m,
		KillRetry: 50 * time.Millisecond, ReportGrace: testReportGrace, Logger: slog.New(r.logs)})
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	var stopped error
	var once sync.Once
	r.stopLauncher = func(ctx context.Context) error {
		once.Do(func() {
			cancel()
			select {
			case stopped = <-done:
			case <-ctx.Done():
				stopped = errors.New("launcher did not stop")
			}
		})
		return stopped
	}
	t.Cleanup(func() {
		if err := r.stopLauncher(ctxFor(t, time.Minute)); err != nil {
			t.Errorf("launcher: %v", err)
		}
	})
	r.booker = newBooker(r.o.pool, dispatch.BookerConfig{Launcher: l, HostAllowed: r.rqd.Allowed,
		PositionWait: positionWait, Logger: slog.New(r.logs)})
	return r
}

// launched waits until every booking is settled as launched, running on the
// host and recorded so in the outbox, and runs the audit.
func (r *outageRig) launched(ctx context.Context, t *testing.T, frames int) {
	t.Helper()
	for _, s := range r.settled.wait(ctx, t, frames) {
		if s.Result != SettledLaunched {
			t.Errorf("settled %+v, want launched", s)
		}
		if !r.srv.IsRunning(s.FrameID) {
			t.Errorf("frame %s not running on the host", s.FrameID)
		}
	}
	var launched int
	if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox WHERE state = 'launched'`).Scan(&launched); err != nil {
		t.Fatal(err)
	}
	if launched != frames {
		t.Errorf("%d outbox rows launched, want %d", launched, frames)
	}
	audittest.Clean(t, r.db.Pool)
}

// commitThenCut returns a spring for the booking's COMMIT: it sends the
// COMMIT, waits until the server has committed the booking's frames outbox
// rows, then cuts the connection before its answer is read, so that the
// booking cannot tell from the connection whether it committed. Before the
// cut it runs before (nil: nothing).
func (r *outageRig) commitThenCut(ctx context.Context, t *testing.T, frames int, before func()) func(c *trapConn, p []byte) (int, error) {
	return func(c *trapConn, p []byte) (int, error) {
		n, err := c.Conn.Write(p)
		if err != nil {
			return n, err
		}
		for {
			var rows int
			if err := r.o.admin.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox`).Scan(&rows); err != nil {
				t.Error(err)
				break
			}
			if rows == frames {
				break
			}
		}
		if before != nil {
			before()
		}
		c.Close()
		return n, nil
	}
}

// The booking's COMMIT and the read of its position, as sent on the wire
// (one simple query).
var commitOnTheWire = []byte("COMMIT;\nSELECT pg_current_wal_lsn()::text")

// A booking whose connection drops right after its COMMIT, before the
// answer is read, is found committed in its outbox rows, booked and
// launched, with a position read later, whether the database answers at
// once or only after a while; with none if it stays unreachable past the
// Booker's wait.
func TestBookPositionLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		down   bool // the database is unreachable for the role for a while
		noWait bool // ... past the Booker's wait for a position
	}{
		{name: "connection dropped"},
		{name: "database unreachable", down: true},
		{name: "database unreachable past the wait", down: true, noWait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 20*time.Second)
			const frames = 2
			var positionWait time.Duration
			if tc.noWait {
				positionWait = time.Millisecond
			}
			r := newOutageRig(t, frames, positionWait)
			ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
			var down func()
			if tc.down {
				// The outbox answers that the booking committed; the
				// database goes away as its position is then read.
				down = func() {
					r.o.arm([]byte("pg_current_wal_lsn()"), func(c *trapConn, _ []byte) (int, error) {
						r.o.lock(ctx)
						c.Close()
						return 0, net.ErrClosed
					})
				}
			}
			r.o.arm(commitOnTheWire, r.commitThenCut(ctx, t, frames, down))
			type booked struct {
				res dispatch.BatchResult
				err error
			}
			done := make(chan booked, 1)
			go func() {
				res, err := r.booker.Book(ctx, testCluster, ps)
				done <- booked{res, err}
			}()
			if tc.down && !tc.noWait {
				r.logs.wait(ctx, t, "read commit position; retrying")
				r.o.unlock(ctx)
			}
			var b booked
			select {
			case b = <-done:
			case <-ctx.Done():
				t.Fatal("Book did not return")
			}
			if b.err != nil || len(b.res.Booked) != frames || len(b.res.Deferred) != 0 || (b.res.LSN == 0) != tc.noWait {
				t.Fatalf("booked %d deferred %d lsn %v: %v", len(b.res.Booked), len(b.res.Deferred), b.res.LSN, b.err)
			}
			if tc.noWait {
				// Booked, with no position: the launcher retries once the
				// database answers.
				r.o.unlock(ctx)
			}
			r.launched(ctx, t, frames)
		})
	}
}

// A booking whose COMMIT is cut off with the database unreachable has an
// unknown outcome; it is resolved once the database is back, however many
// tries that takes, and its committed bookings are launched. A launcher
// stopped before then stops at once and leaves the rows to the next owner.
func TestBookCommitUnknownResolved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop bool // the launcher stops while the database is unreachable
	}{
		{name: "database back"},
		{name: "stopped first", stop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 20*time.Second)
			const frames = 2
			r := newOutageRig(t, frames, 0)
			ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
			r.o.arm(commitOnTheWire, r.commitThenCut(ctx, t, frames, func() { r.o.lock(ctx) }))
			res, err := r.booker.Book(ctx, testCluster, ps)
			if !errors.Is(err, dispatch.ErrCommitUnknown) || len(res.Booked) != 0 {
				t.Fatalf("booked %d: %v, want the commit's outcome unknown", len(res.Booked), err)
			}
			r.logs.wait(ctx, t, "resolve outbox after an unknown commit; retrying")
			if !tc.stop {
				r.o.unlock(ctx)
				r.launched(ctx, t, frames)
				return
			}
			if err := r.stopLauncher(ctx); err != nil {
				t.Fatal(err)
			}
			var pending int
			if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox WHERE state = 'pending'`).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending != frames || len(r.srv.Launches()) != 0 {
				t.Fatalf("%d outbox rows pending, %d launches, want %d and none", pending, len(r.srv.Launches()), frames)
			}
			r.o.unlock(ctx)
			next := runLauncher(t, Config{Pool: r.db.Pool, RQD: r.rqd, OnSettled: r.settled.add})
			if n, err := next.Resolve(ctx, []int32{testCluster.ID}); err != nil || n != frames {
				t.Fatalf("next owner resolved %d: %v", n, err)
			}
			r.launched(ctx, t, frames)
		})
	}
}

// A launch that goes unanswered while the database is unreachable, whose
// booking another instance relaunched and recorded meanwhile (a woken
// owner whose sessions its peer terminated): the launcher cannot read the
// row at first, and must not kill blind; once the database answers it finds
// the booking launched elsewhere and keeps the frame running.
func TestUnansweredLaunchRecordedAfterAnOutageIsNotKilled(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	r := newOutageRig(t, 1, 0)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
	r.srv.Script(ps[0].Frame.ID, fakerqd.Reply{Action: fakerqd.Hang})
	res, err := r.booker.Book(ctx, testCluster, ps)
	if err != nil || len(res.Booked) != 1 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	b := res.Booked[0]
	if err := r.srv.WaitLaunches(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r.o.lock(ctx)
	// The peer's relaunch: RQD runs the frame, and the row says so.
	if _, err := r.srv.LaunchFrame(ctx, &rqdpb.RqdStaticLaunchFrameRequest{RunFrame: &rqdpb.RunFrame{
		ResourceId: b.ProcID, FrameId: b.Frame.ID, NumCores: 100}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.o.admin.Exec(ctx, `UPDATE cuesched.launch_outbox SET state = 'launched' WHERE proc_id = $1`,
		b.ProcID); err != nil {
		t.Fatal(err)
	}
	r.logs.wait(ctx, t, "record unsure launch; retrying")
	r.o.unlock(ctx)
	if s := r.settled.wait(ctx, t, 1)[0]; s.Result != SettledLaunched || s.Reason != "launched-elsewhere" {
		t.Errorf("settled %+v, want launched (launched-elsewhere)", s)
	}
	if ks := r.srv.Kills(); len(ks) != 0 || !r.srv.IsRunning(b.Frame.ID) {
		t.Errorf("killed %+v; the peer's run must go on", ks)
	}
}
