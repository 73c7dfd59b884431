package dispatch

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/audit/audittest"
	"github.com/cuesched/cuesched/internal/fakerqd"
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
	trap   []byte                                  // bytes whose sending springs the trap, once
	spring func(c net.Conn, p []byte) (int, error) // what the write does instead
}

func newOutage(t *testing.T, db *seeded) *outage {
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
func (o *outage) arm(sql []byte, spring func(c net.Conn, p []byte) (int, error)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trap, o.spring = sql, spring
}

func (o *outage) sprung(p []byte) func(c net.Conn, p []byte) (int, error) {
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
	o *outage
}

func (c *trapConn) Write(p []byte) (int, error) {
	if f := c.o.sprung(p); f != nil {
		return f(c.Conn, p)
	}
	return c.Conn.Write(p)
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
	db      *seeded
	o       *outage
	srv     *fakerqd.Server
	booker  *testBooker
	logs    *logWatch
	settled *settledLog
}

func newOutageRig(t *testing.T, frames int) *outageRig {
	t.Helper()
	r := &outageRig{db: loadFarm(t, smallFarm(1, 800, 1, 1, frames, 100)), logs: newLogWatch(), settled: newSettledLog()}
	r.o = newOutage(t, r.db)
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	r.srv = farm.Server(seedName(0) + ":" + itoa(port))
	rqd := newRQD(t, port, 5*time.Second)
	m := NewMetrics(nil)
	l := runLauncher(t, LauncherConfig{Pool: r.o.pool, RQD: rqd, OnSettled: r.settled.add, Metrics: m,
		KillRetry: 50 * time.Millisecond, Logger: slog.New(r.logs)})
	r.booker = newTestBooker(r.o.pool, BookerConfig{Launcher: l, HostAllowed: rqd.Allowed, Metrics: m})
	r.booker.log = slog.New(r.logs)
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

// A booking whose connection drops right after its COMMIT, before its WAL
// position is read, is still booked and launched, with a position read
// later, whether the database answers at once or only after a while.
func TestBookPositionLost(t *testing.T) {
	for _, tc := range []struct {
		name string
		down bool // the database is unreachable for the role for a while
	}{
		{name: "connection dropped"},
		{name: "database unreachable", down: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 20*time.Second)
			const frames = 2
			r := newOutageRig(t, frames)
			ps := firstFit(readView(ctx, t, r.db.Pool), nil)
			r.o.arm([]byte("pg_current_wal_lsn()"), func(c net.Conn, _ []byte) (int, error) {
				if tc.down {
					r.o.lock(ctx)
				}
				c.Close()
				return 0, net.ErrClosed
			})
			type booked struct {
				res BatchResult
				err error
			}
			done := make(chan booked, 1)
			go func() {
				res, err := r.booker.Book(ctx, testCluster, ps)
				done <- booked{res, err}
			}()
			if tc.down {
				r.logs.wait(ctx, t, "read commit position; retrying")
				r.o.unlock(ctx)
			}
			var b booked
			select {
			case b = <-done:
			case <-ctx.Done():
				t.Fatal("Book did not return")
			}
			if b.err != nil || len(b.res.Booked) != frames || len(b.res.Deferred) != 0 || b.res.LSN == 0 {
				t.Fatalf("booked %d deferred %d lsn %v: %v", len(b.res.Booked), len(b.res.Deferred), b.res.LSN, b.err)
			}
			r.launched(ctx, t, frames)
		})
	}
}
