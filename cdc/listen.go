package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// ListenMetrics are the listener's metrics.
type ListenMetrics struct {
	Notifications *prometheus.CounterVec // by channel
	Reconnects    prometheus.Counter
	Resyncs       prometheus.Counter
	Connected     prometheus.Gauge
	QueueUsage    prometheus.Gauge
}

// NewListenMetrics creates the listener's metrics and registers them.
func NewListenMetrics(reg prometheus.Registerer) *ListenMetrics {
	m := &ListenMetrics{
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_listen_notifications_total", Help: "Notifications received, by channel."}, []string{"channel"}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_listen_reconnects_total", Help: "Times the listener connection was lost or refused and retried."}),
		Resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_listen_resyncs_total", Help: "Completed (re)connects: LISTEN in place and every resync done."}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_listen_connected", Help: "1 while the listener is connected and resynced."}),
		QueueUsage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_notification_queue_usage_ratio",
			Help: "pg_notification_queue_usage() as last sampled (sampled only while notifications arrive)."}),
	}
	reg.MustRegister(m.Notifications, m.Reconnects, m.Resyncs, m.Connected, m.QueueUsage)
	return m
}

// Listener keeps one dedicated connection LISTENing on a set of channels and
// hands each notification's payload to the channel's handler. The connection
// is its own (never a pool's, and it must not go through a transaction-mode
// pooler, which does not keep LISTEN). A lost connection is retried with
// backoff; after every (re)connect, once LISTEN is in place, the OnConnect
// functions run so their owners can resync from a query, because PostgreSQL
// drops the notifications sent while nobody listened.
//
// Configure (Handle, OnConnect, the exported fields) before Run.
type Listener struct {
	dsn string
	log *slog.Logger

	// Metrics, when set, receives the listener's metrics.
	Metrics *ListenMetrics
	// MinBackoff and MaxBackoff bound the delay before a reconnect; it
	// doubles from MinBackoff after each failed attempt (with jitter).
	MinBackoff, MaxBackoff time.Duration
	// Keepalive is how long the connection may stay silent before it is
	// pinged (an empty statement), so a dead server or a dropped route is
	// noticed. TCP keepalives catch a vanished peer in the meantime.
	Keepalive time.Duration
	// Timeout bounds connecting, LISTEN, a ping and a queue usage sample.
	Timeout time.Duration
	// UsageEvery is the least time between two samples of
	// pg_notification_queue_usage(). It is sampled only when notifications
	// have arrived, so an idle listener sends nothing but its pings.
	UsageEvery time.Duration

	mu        sync.Mutex
	handlers  map[string]func(payload string)
	onConnect []func(ctx context.Context) error
	running   bool
	pid       uint32
	connected chan struct{}
}

// NewListener returns a listener for the database at dsn (a libpq URL or
// key=value string). A nil logger means slog.Default().
func NewListener(dsn string, logger *slog.Logger) *Listener {
	if logger == nil {
		logger = slog.Default()
	}
	return &Listener{
		dsn:        dsn,
		log:        logger.With("component", "listener"),
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
		Keepalive:  30 * time.Second,
		Timeout:    10 * time.Second,
		UsageEvery: 10 * time.Second,
		handlers:   map[string]func(string){},
		connected:  make(chan struct{}),
	}
}

// Handle registers fn for the notifications of channel. fn runs on the
// listener's goroutine, one notification at a time in arrival order, and
// must return quickly (hand the payload off; never query from it).
func (l *Listener) Handle(channel string, fn func(payload string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running {
		l.log.Error("Handle called after Run; ignored", "channel", channel)
		return
	}
	l.handlers[channel] = fn
}

// OnConnect registers fn to run after every (re)connect, once LISTEN is in
// place, in registration order. An error drops the connection and retries
// (the resync must succeed before the listener counts as connected).
func (l *Listener) OnConnect(fn func(ctx context.Context) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running {
		l.log.Error("OnConnect called after Run; ignored")
		return
	}
	l.onConnect = append(l.onConnect, fn)
}

// Connected returns a channel closed when the listener next completes a
// connect: LISTEN in place and every OnConnect function returned nil. Take
// it before causing the (re)connect you wait for.
func (l *Listener) Connected() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected
}

// PID is the backend process id of the current connection, 0 while
// disconnected.
func (l *Listener) PID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pid
}

// Run listens until ctx ends, reconnecting as needed; it returns nil then.
// It returns an error at once only when it cannot start at all (a malformed
// DSN, Run called twice).
func (l *Listener) Run(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(l.dsn)
	if err != nil {
		return fmt.Errorf("listener: parse database address: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "cuesched-listen"
	}
	// A vanished peer is noticed by TCP within about 30 s even while no
	// ping is due.
	cfg.DialFunc = (&net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}).DialContext
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return errors.New("listener: Run called twice")
	}
	l.running = true
	channels := make([]string, 0, len(l.handlers))
	for ch := range l.handlers {
		channels = append(channels, ch)
	}
	l.mu.Unlock()
	sort.Strings(channels)

	delay := l.MinBackoff
	for {
		established, err := l.session(ctx, cfg, channels)
		if ctx.Err() != nil {
			return nil
		}
		if established {
			delay = l.MinBackoff
		}
		if l.Metrics != nil {
			l.Metrics.Reconnects.Inc()
		}
		wait := delay/2 + rand.N(delay/2+1)
		l.log.Warn("listener connection lost, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !established {
			delay = min(delay*2, l.MaxBackoff)
		}
	}
}

// session runs one connection until it fails or ctx ends. established
// reports whether it got as far as completing a connect.
func (l *Listener) session(ctx context.Context, cfg *pgx.ConnConfig, channels []string) (established bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, l.Timeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		l.setDisconnected()
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()

	if len(channels) > 0 {
		stmts := make([]string, len(channels))
		for i, ch := range channels {
			stmts[i] = "LISTEN " + pgx.Identifier{ch}.Sanitize()
		}
		lctx, cancel := context.WithTimeout(ctx, l.Timeout)
		_, err = conn.Exec(lctx, strings.Join(stmts, "; "))
		cancel()
		if err != nil {
			return false, fmt.Errorf("listen on %s: %w", strings.Join(channels, ", "), err)
		}
	}
	l.mu.Lock()
	resyncs := l.onConnect
	l.mu.Unlock()
	for _, fn := range resyncs {
		if err := fn(ctx); err != nil {
			return false, fmt.Errorf("resync after connect: %w", err)
		}
	}
	pid := conn.PgConn().PID()
	l.setConnected(pid)
	l.log.Info("listening", "channels", channels, "pid", pid)

	var sampled time.Time
	for {
		wctx, cancel := context.WithTimeout(ctx, l.Keepalive)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if n != nil {
			l.deliver(n)
		}
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err == nil:
			if time.Since(sampled) >= l.UsageEvery {
				sampled = time.Now()
				if err := l.sampleUsage(ctx, conn); err != nil {
					return true, err
				}
			}
		case pgconn.Timeout(err):
			pctx, cancel := context.WithTimeout(ctx, l.Timeout)
			err = conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, fmt.Errorf("keepalive ping: %w", err)
			}
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (l *Listener) deliver(n *pgconn.Notification) {
	if l.Metrics != nil {
		l.Metrics.Notifications.WithLabelValues(n.Channel).Inc()
	}
	// handlers is fixed once Run has started.
	if fn := l.handlers[n.Channel]; fn != nil {
		fn(n.Payload)
	}
}

func (l *Listener) sampleUsage(ctx context.Context, conn *pgx.Conn) error {
	sctx, cancel := context.WithTimeout(ctx, l.Timeout)
	defer cancel()
	var usage float64
	if err := conn.QueryRow(sctx, "SELECT pg_notification_queue_usage()").Scan(&usage); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sample notification queue usage: %w", err)
	}
	if l.Metrics != nil {
		l.Metrics.QueueUsage.Set(usage)
	}
	if usage > 0.5 {
		l.log.Warn("notification queue more than half full: a session holds a transaction open while listening",
			"usage", usage)
	}
	return nil
}

func (l *Listener) setConnected(pid uint32) {
	l.mu.Lock()
	l.pid = pid
	close(l.connected)
	l.connected = make(chan struct{})
	l.mu.Unlock()
	if l.Metrics != nil {
		l.Metrics.Resyncs.Inc()
		l.Metrics.Connected.Set(1)
	}
}

func (l *Listener) setDisconnected() {
	l.mu.Lock()
	l.pid = 0
	l.mu.Unlock()
	if l.Metrics != nil {
		l.Metrics.Connected.Set(0)
	}
}
