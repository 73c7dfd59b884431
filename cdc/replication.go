package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Publication is the publication migrations/0002 creates for the host cache.
const Publication = "cuesched_cache"

// WorkChannel names the hints that work may have become dispatchable: the
// channel migrations/0004's triggers notify (a Listener feeds them to the
// pending-layer queue) and the prefix of the transactional messages
// migrations/0008 sends for a retried frame instead (the replica's stream
// hands them on). Both carry the same payload.
const WorkChannel = "cuesched_work"

// Sink is what the replication stream feeds. Its methods are called from
// the stream's goroutine only, one at a time.
type Sink interface {
	// Reset replaces the whole state with the one read inside tx: a
	// REPEATABLE READ, read-only transaction in the snapshot the slot
	// exported at position lsn, so the state is exactly what the stream
	// continues from. It is called after every (re)connect. It must build
	// the new state aside and swap it in at the end, so readers never see
	// a half-loaded state; on error the old state stays.
	Reset(ctx context.Context, tx pgx.Tx, lsn LSN) error
	// Apply applies one committed transaction, atomically for readers. An
	// error means the state can no longer follow the stream (a truncate,
	// say): the stream reconnects, which resyncs from a new snapshot.
	Apply(t *Txn) error
	// Advance says that every transaction committed before lsn has been
	// applied (the server reported its position between transactions).
	Advance(lsn LSN)
}

// StreamEventKind says what a StreamEvent reports.
type StreamEventKind uint8

const (
	// EventSlotCreated: a temporary slot exists; LSN is its consistent
	// point. The snapshot load follows.
	EventSlotCreated StreamEventKind = iota + 1
	// EventLoaded: Sink.Reset succeeded; LSN is the snapshot's position,
	// Took the load's duration.
	EventLoaded
	// EventApplied: Txn was applied.
	EventApplied
	// EventAdvanced: the applied position moved to LSN without a
	// transaction (a keepalive between transactions).
	EventAdvanced
	// EventDisconnected: the session ended with Err; a reconnect follows
	// unless the stream is stopping.
	EventDisconnected
)

// StreamEvent is a typed signal of the stream's progress, for tests and
// observability; OnEvent receives them on the stream's goroutine.
type StreamEvent struct {
	Kind StreamEventKind
	LSN  LSN
	Txn  *Txn
	Took time.Duration
	Err  error
}

// Stream is the logical replication consumer: pgoutput, protocol version 2
// with streaming of large in-progress transactions.
//
// Every session (the first connect and each reconnect) creates a TEMPORARY
// logical slot with an exported snapshot, has the Sink load its state inside
// that snapshot on a second connection, and then streams from the slot's
// consistent point, so nothing between load and stream is lost or applied
// twice (DESIGN.md, contract 4). Temporary slots vanish with their session;
// Run drops its slot itself when it stops, so none is left behind.
//
// Configure the exported fields before Run.
type Stream struct {
	dsn  string
	sink Sink
	log  *slog.Logger

	// Publication is the publication streamed (default Publication).
	Publication string
	// SlotPrefix starts every slot name; a random suffix makes it unique.
	SlotPrefix string
	// StatusInterval is how often the applied position is reported to the
	// server (standby status update).
	StatusInterval time.Duration
	// ReceiveTimeout: a session that hears nothing from the server for this
	// long is considered dead and replaced. Half-way through a silence the
	// consumer asks the server for a keepalive.
	ReceiveTimeout time.Duration
	// Timeout bounds connecting, status updates and shutdown steps.
	Timeout time.Duration
	// SlotTimeout bounds creating the slot, which waits for every
	// transaction in flight in the whole PostgreSQL cluster.
	SlotTimeout time.Duration
	// LoadTimeout bounds the snapshot load.
	LoadTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before a reconnect.
	MinBackoff, MaxBackoff time.Duration
	// Metrics, when set, receives the stream's metrics.
	Metrics *ReplicationMetrics
	// OnEvent, when set, receives every StreamEvent. It runs on the stream's
	// goroutine and must return quickly.
	OnEvent func(StreamEvent)

	mu      sync.Mutex
	running bool
	progress
}

// NewStream returns a consumer of the database at dsn (a libpq URL or
// key=value string) feeding sink. A nil logger means slog.Default().
func NewStream(dsn string, sink Sink, logger *slog.Logger) *Stream {
	if logger == nil {
		logger = slog.Default()
	}
	return &Stream{
		dsn:            dsn,
		sink:           sink,
		log:            logger.With("component", "replication"),
		Publication:    Publication,
		SlotPrefix:     "cuesched_",
		StatusInterval: 10 * time.Second,
		ReceiveTimeout: 60 * time.Second,
		Timeout:        10 * time.Second,
		SlotTimeout:    5 * time.Minute,
		LoadTimeout:    5 * time.Minute,
		MinBackoff:     100 * time.Millisecond,
		MaxBackoff:     10 * time.Second,
		progress:       newProgress(),
	}
}

func (s *Stream) emit(e StreamEvent) {
	if s.OnEvent != nil {
		s.OnEvent(e)
	}
}

// Run consumes the stream until ctx ends, reconnecting with backoff; it
// returns nil then, after dropping its slot. It returns an error at once
// only when it cannot start at all (a malformed DSN, Run called twice).
func (s *Stream) Run(ctx context.Context) error {
	repCfg, err := pgconn.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("replication: parse database address: %w", err)
	}
	loadCfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("replication: parse database address: %w", err)
	}
	for _, params := range []map[string]string{repCfg.RuntimeParams, loadCfg.RuntimeParams} {
		if _, ok := params["application_name"]; !ok {
			params["application_name"] = "cuesched-replication"
		}
		// Values arrive as text: fix the formats they are parsed from.
		params["TimeZone"] = "UTC"
		params["DateStyle"] = "ISO, MDY"
	}
	repCfg.RuntimeParams["replication"] = "database"
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("replication: Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	delay := s.MinBackoff
	for {
		loaded, err := s.session(ctx, repCfg, loadCfg)
		if s.Metrics != nil {
			s.Metrics.Connected.Set(0)
		}
		if ctx.Err() != nil {
			return nil
		}
		s.emit(StreamEvent{Kind: EventDisconnected, Err: err})
		if loaded {
			delay = s.MinBackoff
		}
		if s.Metrics != nil {
			s.Metrics.Reconnects.Inc()
		}
		wait := delay/2 + mrand.N(delay/2+1)
		s.log.Warn("replication session ended, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !loaded {
			delay = min(delay*2, s.MaxBackoff)
		}
	}
}

// session runs one connection: slot, snapshot load, stream. loaded reports
// whether it got as far as a loaded snapshot.
func (s *Stream) session(ctx context.Context, repCfg *pgconn.Config, loadCfg *pgx.ConnConfig) (loaded bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, s.Timeout)
	conn, err := pgconn.ConnectConfig(cctx, repCfg)
	cancel()
	if err != nil {
		return false, fmt.Errorf("connect for replication: %w", err)
	}
	slot, err := slotName(s.SlotPrefix)
	if err != nil {
		conn.Close(context.Background())
		return false, err
	}
	pid, state := conn.PID(), slotUnknown
	defer func() { s.closeSession(conn, loadCfg, pid, slot, state) }()
	sctx, cancel := context.WithTimeout(ctx, s.SlotTimeout)
	res, err := pglogrepl.CreateReplicationSlot(sctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	cancel()
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			state = slotNone // refused by the server: no slot
		}
		return false, fmt.Errorf("create temporary replication slot %s: %w", slot, err)
	}
	state = slotIdle
	start, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return false, fmt.Errorf("slot %s consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	s.emit(StreamEvent{Kind: EventSlotCreated, LSN: start})

	// The exported snapshot lives until the next command on the
	// replication connection: load before START_REPLICATION.
	began := time.Now()
	if err := s.load(ctx, loadCfg, res.SnapshotName, start); err != nil {
		return false, err
	}
	took := time.Since(began)
	if s.Metrics != nil {
		s.Metrics.SnapshotLoad.Observe(took.Seconds())
		s.Metrics.Connected.Set(1)
	}
	s.reset(start) // the Sink is as of start, even below a failed-over primary's figures
	s.markLoaded()
	s.emit(StreamEvent{Kind: EventLoaded, LSN: start, Took: took})
	s.log.Info("replication snapshot loaded", "slot", slot, "lsn", start, "took", took)

	err = pglogrepl.StartReplication(ctx, conn, slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '2'", "streaming 'on'", "messages 'true'",
			"publication_names '" + strings.ReplaceAll(s.Publication, "'", "''") + "'"},
	})
	if err != nil {
		state = slotUnknown // the server may be streaming already
		return true, fmt.Errorf("start replication from slot %s: %w", slot, err)
	}
	state = slotStreaming
	return true, s.receive(ctx, conn)
}

func (s *Stream) load(ctx context.Context, cfg *pgx.ConnConfig, snapshot string, lsn LSN) error {
	lctx, cancel := context.WithTimeout(ctx, s.LoadTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(lctx, cfg)
	if err != nil {
		return fmt.Errorf("connect for snapshot load: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(lctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin snapshot load: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(lctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snapshot, "'", "''")+"'"); err != nil {
		return fmt.Errorf("import snapshot %s: %w", snapshot, err)
	}
	if err := s.sink.Reset(lctx, tx, lsn); err != nil {
		return fmt.Errorf("load snapshot at %s: %w", lsn, err)
	}
	return tx.Commit(lctx)
}

// receive streams until an error or ctx ends.
func (s *Stream) receive(ctx context.Context, conn *pgconn.PgConn) error {
	asm := newAssembler()
	lastRecv := time.Now()
	nextStatus := time.Now()
	pinged := false
	for {
		now := time.Now()
		silent := now.Sub(lastRecv)
		if silent >= s.ReceiveTimeout {
			return fmt.Errorf("nothing received from the server for %s", s.ReceiveTimeout)
		}
		// Half-way through a silence, ask for a keepalive: the reply proves
		// the session alive before ReceiveTimeout gives up on it.
		ask := !pinged && silent >= s.ReceiveTimeout/2
		if ask || !now.Before(nextStatus) {
			if err := s.sendStatus(conn, ask); err != nil {
				return err
			}
			pinged = pinged || ask
			nextStatus = now.Add(s.StatusInterval)
		}
		deadline := earliest(nextStatus, lastRecv.Add(s.ReceiveTimeout))
		if !pinged {
			deadline = earliest(deadline, lastRecv.Add(s.ReceiveTimeout/2))
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		lastRecv, pinged = time.Now(), false
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.copyData(conn, asm, msg.Data, &nextStatus); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("server: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("server ended the stream")
		}
	}
}

func (s *Stream) copyData(conn *pgconn.PgConn, asm *assembler, data []byte, nextStatus *time.Time) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("keepalive: %w", err)
		}
		if s.Metrics != nil {
			s.Metrics.observeServer(k.ServerWALEnd)
		}
		// Between transactions the server's position is applied: every
		// transaction committed before it has been sent, and received
		// before this message.
		if !asm.busy() && k.ServerWALEnd > s.Applied() {
			s.sink.Advance(k.ServerWALEnd)
			s.setApplied(k.ServerWALEnd)
			if s.Metrics != nil {
				s.Metrics.observeApplied(k.ServerWALEnd, time.Time{})
			}
			s.emit(StreamEvent{Kind: EventAdvanced, LSN: k.ServerWALEnd})
		}
		if k.ReplyRequested {
			*nextStatus = time.Now()
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("xlog data: %w", err)
		}
		if s.Metrics != nil {
			s.Metrics.observeServer(x.ServerWALEnd)
		}
		m, err := asm.parse(x.WALData)
		if err != nil {
			return fmt.Errorf("decode pgoutput message at %s: %w", x.WALStart, err)
		}
		if s.Metrics != nil {
			if _, ok := m.(*pglogrepl.StreamStartMessageV2); ok {
				s.Metrics.StreamBlocks.Inc()
			}
		}
		t, err := asm.handle(m)
		if err != nil {
			return fmt.Errorf("pgoutput at %s: %w", x.WALStart, err)
		}
		if t != nil {
			if err := s.sink.Apply(t); err != nil {
				return fmt.Errorf("apply transaction %d committed at %s: %w", t.Xid, t.CommitLSN, err)
			}
			s.setApplied(t.EndLSN)
			if s.Metrics != nil {
				s.Metrics.observeTxn(t)
			}
			s.emit(StreamEvent{Kind: EventApplied, LSN: t.EndLSN, Txn: t})
		}
	}
	return nil
}

func (s *Stream) sendStatus(conn *pgconn.PgConn, replyRequested bool) error {
	applied := s.Applied()
	conn.Conn().SetWriteDeadline(time.Now().Add(s.Timeout))
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: applied, ReplyRequested: replyRequested})
	conn.Conn().SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

// slotState is what a session knows of its slot when it ends.
type slotState uint8

const (
	slotNone      slotState = iota // never created
	slotUnknown                    // an interrupted command may have created it or left the stream running
	slotIdle                       // created, not streaming
	slotStreaming                  // streaming
)

// closeSession ends the stream and drops the slot, so that none is left once
// Run returns. Closing the connection alone drops a temporary slot too, but
// only once the server has noticed; when the slot cannot be dropped in an
// orderly way (an interrupted command, a broken connection), the session's
// backend is ended and waited for instead.
func (s *Stream) closeSession(conn *pgconn.PgConn, cfg *pgx.ConnConfig, pid uint32, slot string, state slotState) {
	gone := state == slotNone
	if !gone && state != slotUnknown && !conn.IsClosed() {
		gone = s.dropSlot(conn, slot, state == slotStreaming)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	conn.Close(ctx)
	if gone {
		return
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		s.log.Debug("end replication backend: connect", "pid", pid, "err", err)
		return
	}
	defer c.Close(context.Background())
	// Waits until the backend has exited, which drops its temporary slot.
	var ended bool
	if err := c.QueryRow(ctx, "SELECT pg_terminate_backend($1, $2)", int64(pid), s.Timeout.Milliseconds()).
		Scan(&ended); err != nil {
		s.log.Debug("end replication backend", "pid", pid, "err", err)
	}
}

// dropSlot ends the stream (CopyDone) if it runs and drops the slot on its
// own connection; false when that did not work out.
func (s *Stream) dropSlot(conn *pgconn.PgConn, slot string, streaming bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	if streaming {
		if err := s.sendStatus(conn, false); err != nil {
			return false
		}
		// SendStandbyCopyDone reads without a context: bound it.
		conn.Conn().SetDeadline(time.Now().Add(s.Timeout))
		_, err := pglogrepl.SendStandbyCopyDone(ctx, conn)
		conn.Conn().SetDeadline(time.Time{})
		if err != nil {
			s.log.Debug("end replication stream", "slot", slot, "err", err)
			return false
		}
	}
	if err := pglogrepl.DropReplicationSlot(ctx, conn, slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
		s.log.Debug("drop replication slot", "slot", slot, "err", err)
		return false
	}
	return true
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// slotName is prefix plus 16 random hex digits: slot names are cluster-wide
// and every session needs its own.
func slotName(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("slot name: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// LoadTable reads the given columns of every row of table inside tx in text
// format, the format the stream delivers, and hands each row to fn as a
// Tuple of rel, so a Sink decodes loaded and streamed rows alike.
func LoadTable(ctx context.Context, tx pgx.Tx, table string, columns []string, fn func(rel *Relation, t Tuple) error) error {
	quoted := make([]string, len(columns))
	for i, c := range columns {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	rel := NewRelation(0, "", table, columns)
	rows, err := tx.Query(ctx, "SELECT "+strings.Join(quoted, ", ")+" FROM "+pgx.Identifier{table}.Sanitize(),
		pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("load %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		t := make(Tuple, len(raw))
		for i, v := range raw {
			if v == nil {
				t[i] = Value{Kind: Null}
			} else {
				t[i] = Value{Kind: Text, Text: string(v)}
			}
		}
		if err := fn(rel, t); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load %s: %w", table, err)
	}
	return nil
}
