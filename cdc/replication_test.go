package cdc

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// rowsSink keeps the rows of the test tables as the stream describes them,
// merging unchanged (TOASTed) values from the cached row, the way the host
// cache does.
type rowsSink struct {
	tables map[string][]string // table -> columns

	mu       sync.Mutex
	rows     map[string]map[string]Tuple // table -> id -> row
	resets   int
	unchaged int      // values received as unchanged TOAST
	msgs     []string // messages received, as "prefix:content"
}

func newRowsSink(tables map[string][]string) *rowsSink {
	return &rowsSink{tables: tables, rows: map[string]map[string]Tuple{}}
}

func (s *rowsSink) Reset(ctx context.Context, tx pgx.Tx, lsn LSN) error {
	rows := map[string]map[string]Tuple{}
	for name, cols := range s.tables {
		rows[name] = map[string]Tuple{}
		if err := LoadTable(ctx, tx, name, cols, func(rel *Relation, t Tuple) error {
			rows[name][t[0].Text] = t
			return nil
		}); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.rows = rows
	s.resets++
	s.mu.Unlock()
	return nil
}

func (s *rowsSink) Apply(t *Txn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range t.Messages {
		s.msgs = append(s.msgs, m.Prefix+":"+m.Content)
	}
	for _, c := range t.Changes {
		m := s.rows[c.Rel.Name]
		if m == nil {
			return fmt.Errorf("change of unexpected table %s", c.Rel.Name)
		}
		switch c.Op {
		case Delete:
			delete(m, c.Old[0].Text)
		case Insert, Update:
			id := c.New[0].Text
			row := make(Tuple, len(c.New))
			for i, v := range c.New {
				if v.Kind == Unchanged {
					s.unchaged++
					v = m[id][i]
				}
				row[i] = v
			}
			m[id] = row
		case Truncate:
			return fmt.Errorf("truncate of %s", c.Rel.Name)
		}
	}
	return nil
}

func (s *rowsSink) Advance(LSN) {}

func (s *rowsSink) snapshot(table string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for id, t := range s.rows[table] {
		var parts []string
		for _, v := range t {
			parts = append(parts, v.Text)
		}
		out[id] = strings.Join(parts, "|")
	}
	return out
}

// tableRows reads a table the way snapshot renders the sink's rows.
func tableRows(t *testing.T, pool *pgxpool.Pool, table string, cols []string) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), fmt.Sprintf("SELECT %s FROM %s", strings.Join(cols, ", "), table),
		pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var parts []string
		for _, v := range rows.RawValues() {
			parts = append(parts, string(v))
		}
		out[parts[0]] = strings.Join(parts, "|")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type streamHarness struct {
	t      *testing.T
	db     *pgtest.DB
	sink   *rowsSink
	stream *Stream
	events chan StreamEvent
	stop   func()
}

var testCols = map[string][]string{"rep_a": {"id", "big", "n"}}

// startStream creates the test table and publication and runs a Stream on
// it. extraDSN is appended to the replication DSN (session settings).
func startStream(t *testing.T, extraDSN string) *streamHarness {
	t.Helper()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		CREATE TABLE rep_a (id int PRIMARY KEY, big text, n int NOT NULL DEFAULT 0);
		ALTER TABLE rep_a ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE rep_unpublished (id int PRIMARY KEY);
		CREATE PUBLICATION rep_test FOR TABLE rep_a;
		INSERT INTO rep_a (id, big, n) SELECT g, 'row' || g, g FROM generate_series(1, 50) g`); err != nil {
		t.Fatal(err)
	}
	h := &streamHarness{t: t, db: db, sink: newRowsSink(testCols), events: make(chan StreamEvent, 4096)}
	h.stream = NewStream(db.DSN+" "+extraDSN, h.sink, slog.New(slog.DiscardHandler))
	h.stream.Publication = "rep_test"
	h.stream.Metrics = NewReplicationMetrics(prometheus.NewRegistry())
	h.stream.MinBackoff, h.stream.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	h.stream.StatusInterval = 200 * time.Millisecond
	h.stream.OnEvent = func(e StreamEvent) {
		select {
		case h.events <- e:
		default:
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.stream.Run(rctx) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	t.Cleanup(h.stop)
	select {
	case <-h.stream.Ready():
	case <-time.After(60 * time.Second):
		t.Fatal("no snapshot loaded")
	}
	return h
}

func (h *streamHarness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// sync waits until the stream has applied everything committed so far.
func (h *streamHarness) sync() {
	h.t.Helper()
	var lsn LSN
	if err := h.db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.stream.WaitApplied(ctx, lsn); err != nil {
		h.t.Fatal(err)
	}
}

func (h *streamHarness) check() {
	h.t.Helper()
	got, want := h.sink.snapshot("rep_a"), tableRows(h.t, h.db.Pool, "rep_a", testCols["rep_a"])
	if !maps.Equal(got, want) {
		for id, w := range want {
			if got[id] != w {
				h.t.Errorf("row %s: stream has %.60q, table %.60q", id, got[id], w)
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				h.t.Errorf("row %s: stream has it, table does not", id)
			}
		}
		h.t.FailNow()
	}
}

func (h *streamHarness) slots() int {
	var n int
	if err := h.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func TestStreamSnapshotThenChanges(t *testing.T) {
	h := startStream(t, "")
	h.check()
	h.exec(`INSERT INTO rep_a (id, big) VALUES (100, 'x')`)
	h.exec(`UPDATE rep_a SET n = n + 1 WHERE id <= 10`)
	h.exec(`DELETE FROM rep_a WHERE id BETWEEN 20 AND 25`)
	h.sync()
	h.check()
	if h.slots() != 1 {
		t.Fatalf("%d slots while running, want 1", h.slots())
	}
	h.stop()
	if n := h.slots(); n != 0 {
		t.Fatalf("%d replication slots left after Stop", n)
	}
	if v := metricValue(h.stream.Metrics.Connected); v != 0 {
		t.Fatalf("cuesched_replication_connected %v after the stream stopped, want 0", v)
	}
}

// TestStreamCarriesTransactionalMessages: pg_logical_emit_message(true, ...)
// arrives with its transaction, only if that commits and only once; a
// non-transactional message is not bound to a commit and is dropped.
func TestStreamCarriesTransactionalMessages(t *testing.T) {
	h := startStream(t, "logical_decoding_work_mem=64kB")
	ctx := context.Background()
	h.exec(`SELECT pg_logical_emit_message(true, 'p', 'alone')`)
	h.exec(`SELECT pg_logical_emit_message(false, 'p', 'loose')`)
	h.exec(`INSERT INTO rep_unpublished VALUES (1); SELECT pg_logical_emit_message(true, 'p', 'unpublished write')`)
	tx, err := h.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'p', 'rolled back')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, h.db.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE rep_a SET n = n + 1 WHERE id = 1;
			SELECT pg_logical_emit_message(true, 'p', 'with a change');
			SAVEPOINT s1; SELECT pg_logical_emit_message(true, 'p', 'savepoint rolled back'); ROLLBACK TO s1;
			SELECT pg_logical_emit_message(true, 'q', 'second')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Streamed while in progress (over the 64 kB budget).
	h.exec(`INSERT INTO rep_a (id, big) SELECT g, repeat('z', 200) FROM generate_series(1000, 2999) g;
		SELECT pg_logical_emit_message(true, 'p', 'streamed')`)
	h.sync()
	h.check()
	h.sink.mu.Lock()
	got := h.sink.msgs
	h.sink.mu.Unlock()
	want := []string{"p:alone", "p:unpublished write", "p:with a change", "q:second", "p:streamed"}
	if !slices.Equal(got, want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
	var d dto.Metric
	if err := h.stream.Metrics.Messages.Write(&d); err != nil || d.Counter.GetValue() != float64(len(want)) {
		t.Errorf("messages counted %v (%v), want %d", d.Counter.GetValue(), err, len(want))
	}
}

// TestWaitAppliedPassesUnpublishedWrites: a position reached by writes the
// stream never carries (another table) is still reported applied.
func TestWaitAppliedPassesUnpublishedWrites(t *testing.T) {
	h := startStream(t, "")
	h.exec(`INSERT INTO rep_unpublished SELECT generate_series(1, 100)`)
	h.sync()
}

func TestStreamedTransactions(t *testing.T) {
	// A 64 kB decoding budget makes the walsender stream any transaction
	// bigger than that while it is still in progress.
	h := startStream(t, "logical_decoding_work_mem=64kB")
	big := strings.Repeat("y", 200)
	h.exec(`INSERT INTO rep_a (id, big) SELECT g, $1 || g FROM generate_series(1000, 4999) g`, big)
	// Aborted after streaming: nothing of it may arrive.
	ctx := context.Background()
	tx, err := h.db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO rep_a (id, big) SELECT g, $1 FROM generate_series(5000, 8999) g`, big); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE rep_a SET n = -1 WHERE id < 1000`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A rolled-back savepoint inside a streamed transaction.
	if err := pgx.BeginFunc(ctx, h.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rep_a (id, big) SELECT g, $1 FROM generate_series(9000, 10999) g`, big); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SAVEPOINT s1`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO rep_a (id, big) SELECT g, $1 FROM generate_series(11000, 12999) g`, big); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM rep_a WHERE id < 10`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s1`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE rep_a SET n = 7 WHERE id BETWEEN 9000 AND 9010`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h.sync()
	h.check()
	streamed := 0
	for len(h.events) > 0 {
		if e := <-h.events; e.Kind == EventApplied && e.Txn.Streamed {
			streamed++
		}
	}
	if streamed != 2 {
		t.Fatalf("%d transactions arrived streamed, want 2 (the decoding budget did not force streaming?)", streamed)
	}
}

func TestUnchangedToastValuesArriveUnchanged(t *testing.T) {
	h := startStream(t, "")
	// EXTERNAL storage moves a value this long out of line, uncompressed.
	h.exec(`UPDATE rep_a SET big = repeat('z', 9000) WHERE id = 1`)
	h.exec(`UPDATE rep_a SET n = 99 WHERE id = 1`)
	h.sync()
	h.check()
	h.sink.mu.Lock()
	n := h.sink.unchaged
	h.sink.mu.Unlock()
	if n == 0 {
		t.Fatal("no value arrived as unchanged TOAST: the test did not exercise the merge")
	}
}

// TestStreamReconnectsAfterTerminate: a terminated walsender is replaced by a
// new session that resyncs from a fresh snapshot, changes made meanwhile
// included, and no slot is left once the stream stops.
func TestStreamReconnectsAfterTerminate(t *testing.T) {
	h := startStream(t, "")
	for range 2 {
		var n int
		if err := h.db.Pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(active_pid))
			FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("terminated %d walsenders, want 1", n)
		}
		h.exec(`UPDATE rep_a SET n = n + 100 WHERE id % 2 = 0`)
		h.exec(`INSERT INTO rep_a (id) SELECT max(id) + 1 FROM rep_a`)
		h.sync()
		h.check()
		if v := metricValue(h.stream.Metrics.Connected); v != 1 {
			t.Fatalf("cuesched_replication_connected %v once the new session streams, want 1", v)
		}
	}
	h.sink.mu.Lock()
	resets := h.sink.resets
	h.sink.mu.Unlock()
	if resets < 3 {
		t.Fatalf("%d snapshot loads, want one per session (3)", resets)
	}
	h.stop()
	if n := h.slots(); n != 0 {
		t.Fatalf("%d replication slots left after Stop", n)
	}
}

// TestStopDuringSetupLeavesNoSlot stops the stream right after its slot is
// created (before the load) and right after the load (while replication
// starts): Run returns with no slot left either way.
func TestStopDuringSetupLeavesNoSlot(t *testing.T) {
	for name, at := range map[string]StreamEventKind{"slot created": EventSlotCreated, "loaded": EventLoaded} {
		t.Run(name, func(t *testing.T) {
			db := pgtest.NewDB(t, pgtest.Cuebot)
			ctx := context.Background()
			if _, err := db.Pool.Exec(ctx, `CREATE TABLE rep_a (id int PRIMARY KEY, big text, n int NOT NULL DEFAULT 0);
				CREATE PUBLICATION rep_test FOR TABLE rep_a`); err != nil {
				t.Fatal(err)
			}
			st := NewStream(db.DSN, newRowsSink(testCols), slog.New(slog.DiscardHandler))
			st.Publication = "rep_test"
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			st.OnEvent = func(e StreamEvent) {
				if e.Kind == at {
					cancel()
				}
			}
			done := make(chan error, 1)
			go func() { done <- st.Run(rctx) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not return")
			}
			var n int
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d replication slots left", n)
			}
		})
	}
}
