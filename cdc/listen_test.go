package cdc

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// await fails the test unless ch delivers within a generous deadline.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// runListener starts l and stops it when the test ends.
func runListener(t *testing.T, l *Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := await(t, done, "listener to stop"); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// loginRole creates a role the test can forbid to log in, so that a
// reconnect is held off for as long as the test needs.
func loginRole(t *testing.T, db *pgtest.DB) (dsn string, allow func(bool)) {
	t.Helper()
	ctx := context.Background()
	role := "listen_" + db.Name
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER", role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The database is dropped WITH (FORCE) after this; end the role's
		// sessions first so the role can go.
		db.Pool.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		db.Pool.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})
	return db.DSN + " user=" + role, func(ok bool) {
		t.Helper()
		login := "LOGIN"
		if !ok {
			login = "NOLOGIN"
		}
		if _, err := db.Pool.Exec(ctx, fmt.Sprintf("ALTER ROLE %s %s", role, login)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestListenerDeliversPerChannel(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	l := NewListener(db.DSN, nil)
	l.Metrics = NewListenMetrics(reg)
	a, b := make(chan string, 10), make(chan string, 10)
	l.Handle("chan_a", func(p string) { a <- p })
	l.Handle("chan b", func(p string) { b <- p }) // a name that needs quoting
	var resyncs atomic.Int32
	l.OnConnect(func(context.Context) error { resyncs.Add(1); return nil })
	connected := l.Connected()
	runListener(t, l)
	await(t, connected, "first connect")

	if _, err := db.Pool.Exec(ctx, `SELECT pg_notify('chan_a', 'one'), pg_notify('chan b', 'two'),
		pg_notify('unheard', 'x')`); err != nil {
		t.Fatal(err)
	}
	if got := await(t, a, "chan_a"); got != "one" {
		t.Errorf("chan_a payload %q, want one", got)
	}
	if got := await(t, b, "chan b"); got != "two" {
		t.Errorf("chan b payload %q, want two", got)
	}
	if n := resyncs.Load(); n != 1 {
		t.Errorf("OnConnect ran %d times, want 1", n)
	}
	if got := metricValue(l.Metrics.Notifications.WithLabelValues("chan_a")); got != 1 {
		t.Errorf("notifications{chan_a} = %v, want 1", got)
	}
	if got := metricValue(l.Metrics.Connected); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	var app string
	if err := db.Pool.QueryRow(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
		int64(l.PID())).Scan(&app); err != nil || app != "cuesched-listen" {
		t.Errorf("listener backend application_name %q (%v), want cuesched-listen", app, err)
	}
}

// Notifications sent while the listener's backend is gone are lost by
// PostgreSQL; the listener's job is to reconnect and run OnConnect again so
// the owner resyncs.
func TestListenerReconnectsAndResyncsAfterTerminate(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	dsn, allowLogin := loginRole(t, db)
	l := NewListener(dsn, nil)
	l.Metrics = NewListenMetrics(prometheus.NewRegistry())
	l.MinBackoff, l.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	got := make(chan string, 10)
	l.Handle("work", func(p string) { got <- p })
	resynced := make(chan int32, 10)
	var resyncs atomic.Int32
	l.OnConnect(func(context.Context) error { resynced <- resyncs.Add(1); return nil })
	connected := l.Connected()
	runListener(t, l)
	await(t, connected, "first connect")
	await(t, resynced, "first resync")

	allowLogin(false)
	pid := l.PID()
	connected = l.Connected()
	if _, err := db.Pool.Exec(ctx, "SELECT pg_terminate_backend($1, 10000)", int64(pid)); err != nil {
		t.Fatal(err)
	}
	// Sent while no listener exists: lost.
	if _, err := db.Pool.Exec(ctx, "SELECT pg_notify('work', 'lost')"); err != nil {
		t.Fatal(err)
	}
	allowLogin(true)
	await(t, connected, "reconnect")
	if n := await(t, resynced, "resync after reconnect"); n != 2 {
		t.Errorf("resync count %d after reconnect, want 2", n)
	}
	if l.PID() == pid || l.PID() == 0 {
		t.Errorf("PID %d after reconnect (was %d)", l.PID(), pid)
	}
	if _, err := db.Pool.Exec(ctx, "SELECT pg_notify('work', 'after')"); err != nil {
		t.Fatal(err)
	}
	if p := await(t, got, "notification after reconnect"); p != "after" {
		t.Errorf("payload %q after reconnect, want after (the lost one must not appear)", p)
	}
	if r := metricValue(l.Metrics.Reconnects); r < 1 {
		t.Errorf("reconnects = %v, want >= 1", r)
	}
	if r := metricValue(l.Metrics.Resyncs); r != 2 {
		t.Errorf("resyncs = %v, want 2", r)
	}
}

// A failing resync drops the connection and is retried: the listener only
// counts as connected once the owner's resync succeeded.
func TestListenerRetriesFailedResync(t *testing.T) {
	db := pgtest.NewDB(t)
	l := NewListener(db.DSN, nil)
	l.MinBackoff, l.MaxBackoff = time.Millisecond, 5*time.Millisecond
	var calls atomic.Int32
	l.OnConnect(func(context.Context) error {
		if calls.Add(1) < 3 {
			return fmt.Errorf("resync refused")
		}
		return nil
	})
	connected := l.Connected()
	runListener(t, l)
	await(t, connected, "connect after failed resyncs")
	if n := calls.Load(); n != 3 {
		t.Errorf("OnConnect ran %d times, want 3", n)
	}
}

// A connection that goes silent without closing (a hung server, a dropped
// route) is found by the keepalive ping's deadline and replaced.
func TestListenerReplacesSilentConnection(t *testing.T) {
	db := pgtest.NewDB(t)
	p := newFreezeProxy(t, fmt.Sprintf("127.0.0.1:%d", db.Cluster.Port))
	host, port, _ := net.SplitHostPort(p.Addr())
	dsn := fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", host, port, db.Name)
	l := NewListener(dsn, nil)
	l.Keepalive, l.Timeout = 20*time.Millisecond, 200*time.Millisecond
	l.MinBackoff, l.MaxBackoff = time.Millisecond, 5*time.Millisecond
	got := make(chan string, 10)
	l.Handle("work", func(p string) { got <- p })
	connected := l.Connected()
	runListener(t, l)
	await(t, connected, "first connect")

	connected = l.Connected()
	p.Freeze()
	await(t, connected, "reconnect after the link went silent")
	if _, err := db.Pool.Exec(context.Background(), "SELECT pg_notify('work', 'fresh')"); err != nil {
		t.Fatal(err)
	}
	if v := await(t, got, "notification on the new connection"); v != "fresh" {
		t.Errorf("payload %q, want fresh", v)
	}
}

// An idle listener sends no sample of the notification queue; a busy one at
// most one per UsageEvery.
func TestListenerSamplesQueueUsageOnlyWhenBusy(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		t.Fatal(err)
	}
	l := NewListener(db.DSN, nil)
	l.UsageEvery = time.Hour
	got := make(chan string, 10)
	l.Handle("work", func(p string) { got <- p })
	// Forget what earlier statements did, then count from the connect on.
	if _, err := db.Pool.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	connected := l.Connected()
	runListener(t, l)
	await(t, connected, "connect")
	samples := func() int64 {
		t.Helper()
		var n int64
		if err := db.Pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
			WHERE query LIKE '%pg_notification_queue_usage%' AND query NOT LIKE '%pg_stat_statements%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := samples(); n != 0 {
		t.Errorf("idle listener sampled the queue %d times", n)
	}
	for i := range 5 {
		if _, err := db.Pool.Exec(ctx, "SELECT pg_notify('work', $1)", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		await(t, got, "notification")
	}
	// The sample follows the first delivery on the listener's goroutine, so
	// the later deliveries order this check after it.
	if n := samples(); n != 1 {
		t.Errorf("busy listener sampled the queue %d times with UsageEvery 1h, want 1", n)
	}
}

func TestListenerRejectsBadDSN(t *testing.T) {
	l := NewListener("host=127.0.0.1 port=notaport", nil)
	if err := l.Run(context.Background()); err == nil {
		t.Fatal("Run with a malformed DSN returned nil")
	}
}

// freezeProxy forwards TCP to a target; Freeze makes every connection open
// at that moment stop forwarding without closing (new ones still work).
type freezeProxy struct {
	ln     net.Listener
	target string
	stop   chan struct{}
	mu     sync.Mutex
	open   []*atomic.Bool
	wg     sync.WaitGroup
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, stop: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		close(p.stop)
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *freezeProxy) Addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		frozen := new(atomic.Bool)
		p.mu.Lock()
		p.open = append(p.open, frozen)
		p.mu.Unlock()
		p.wg.Add(3)
		go p.pipe(c, s, frozen)
		go p.pipe(s, c, frozen)
		go func() {
			defer p.wg.Done()
			<-p.stop
			c.Close()
			s.Close()
		}()
	}
}

// pipe copies src to dst until either closes; once frozen it swallows what
// it reads and forwards nothing more.
func (p *freezeProxy) pipe(src, dst net.Conn, frozen *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Freeze silences every connection open now.
func (p *freezeProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.open {
		f.Store(true)
	}
	p.open = nil
}
