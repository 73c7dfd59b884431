package cdc

import (
	"context"
	"errors"
	"fmt"
	"github.com/cuesched/cuesched/internal/wait"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Poller is the Feed for a server that offers no logical replication
// (wal_level replica, a role without REPLICATION): every Interval it has the
// Sink load its whole state again (Sink.Reset) inside a REPEATABLE READ,
// read-only transaction. It never calls Apply or Advance. Each load's
// position is the pg_current_wal_lsn() read just before the transaction takes
// its snapshot, so a booking whose commit position dispatch read (after its
// commit returned) is below it is in the snapshot, and WaitApplied and the
// booked-capacity holds work as with the stream, one poll behind.
//
// It holds one session of its own on the database and runs one statement
// outside the transaction, so it needs no pooler-safe protocol; LoadTable
// uses the simple protocol anyway.
type Poller struct {
	dsn  string
	sink Sink
	log  *slog.Logger

	// Interval is the time from the start of one load to the start of the
	// next.
	Interval time.Duration
	// Timeout bounds connecting; LoadTimeout one load.
	Timeout, LoadTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before a failed load is
	// retried.
	MinBackoff, MaxBackoff time.Duration
	// Metrics, when set, receives the load durations (SnapshotLoad), the
	// failed loads (Reconnects) and the position (lag stays 0: the cache is
	// always one whole load behind, never part of one).
	Metrics *ReplicationMetrics
	// OnEvent, when set, receives EventLoaded after every load and
	// EventDisconnected after every failed one, on the poller's goroutine.
	OnEvent func(StreamEvent)

	mu      sync.Mutex
	running bool
	progress
}

// NewPoller returns a poller of the database at dsn (a libpq URL or
// key=value string) feeding sink every interval. A nil logger means
// slog.Default().
func NewPoller(dsn string, sink Sink, interval time.Duration, logger *slog.Logger) *Poller {
	if logger == nil {
		logger = slog.Default()
	}
	return &Poller{
		dsn: dsn, sink: sink, log: logger.With("component", "poll"),
		Interval: interval, Timeout: 10 * time.Second, LoadTimeout: 5 * time.Minute,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second,
		progress: newProgress(),
	}
}

// Run loads the Sink every Interval until ctx ends; it returns nil then. It
// returns an error at once only when it cannot start at all (a malformed
// DSN, an Interval <= 0, Run called twice).
func (p *Poller) Run(ctx context.Context) error {
	if p.Interval <= 0 {
		return fmt.Errorf("poll: interval %s must be positive", p.Interval)
	}
	cfg, err := pgx.ParseConfig(p.dsn)
	if err != nil {
		return fmt.Errorf("poll: parse database address: %w", err)
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "cuesched-poll"
	}
	// Values are read as text, as the stream delivers them: fix the formats
	// they are parsed from.
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("poll: Run called twice")
	}
	p.running = true
	p.mu.Unlock()

	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	delay := p.MinBackoff
	for {
		began := time.Now()
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, p.Timeout)
			conn, err = pgx.ConnectConfig(cctx, cfg)
			cancel()
			if err != nil {
				conn, err = nil, fmt.Errorf("connect for polling: %w", err)
			}
		}
		var lsn LSN
		if err == nil {
			lsn, err = p.load(ctx, conn)
		}
		if ctx.Err() != nil {
			return nil
		}
		pause := p.Interval - time.Since(began)
		if err != nil {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			p.emit(StreamEvent{Kind: EventDisconnected, Err: err})
			if p.Metrics != nil {
				p.Metrics.Reconnects.Inc()
				p.Metrics.Connected.Set(0)
			}
			pause = delay/2 + mrand.N(delay/2+1)
			delay = min(delay*2, p.MaxBackoff)
			p.log.Warn("poll of the host cache failed, retrying", "err", err, "in", pause)
		} else {
			delay = p.MinBackoff
			took := time.Since(began)
			p.reset(lsn) // a whole snapshot: as of lsn, even below a failed-over primary's figures
			p.markLoaded()
			if p.Metrics != nil {
				p.Metrics.SnapshotLoad.Observe(took.Seconds())
				p.Metrics.Connected.Set(1)
				p.Metrics.observeServer(lsn)
				p.Metrics.observeApplied(lsn, time.Time{})
			}
			p.emit(StreamEvent{Kind: EventLoaded, LSN: lsn, Took: took})
			p.log.Debug("host cache polled", "lsn", lsn, "took", took)
		}
		if !wait.Sleep(ctx, pause) {
			return nil
		}
	}
}

// load reads the position, then has the Sink load inside a snapshot taken
// after it.
func (p *Poller) load(ctx context.Context, conn *pgx.Conn) (LSN, error) {
	lctx, cancel := context.WithTimeout(ctx, p.LoadTimeout)
	defer cancel()
	var lsn LSN
	if err := conn.QueryRow(lctx, "SELECT pg_current_wal_lsn()", pgx.QueryExecModeSimpleProtocol).
		Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the WAL position: %w", err)
	}
	tx, err := conn.BeginTx(lctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("begin poll: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := p.sink.Reset(lctx, tx, lsn); err != nil {
		return 0, fmt.Errorf("load snapshot at %s: %w", lsn, err)
	}
	if err := tx.Commit(lctx); err != nil {
		return 0, fmt.Errorf("end poll: %w", err)
	}
	return lsn, nil
}

func (p *Poller) emit(e StreamEvent) {
	if p.OnEvent != nil {
		p.OnEvent(e)
	}
}
