package queue_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/queue"
)

const deadline = 30 * time.Second

func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// testFarm is a small farm: two managed shows' worth of room in
// local.general, a show Cuebot still books, a capped folder and a limit.
func testFarm(t *testing.T, db *pgtest.DB) *seed.Seeded {
	t.Helper()
	f := &seed.Farm{
		Hosts: []seed.Host{
			{Name: "127.10.0.1", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB},
			{Name: "127.10.0.2", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB},
		},
		Shows: []seed.Show{
			{Name: "managed", Managed: true, Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 100000, Burst: 100000}}},
			{Name: "cuebot", Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 100000, Burst: 100000}}},
		},
		Folders: []seed.Folder{{Show: "managed", Name: "capped", MaxCores: 1000, MaxGPUs: 1}},
		Limits:  []seed.Limit{{Name: "licence", Max: 5}},
	}
	s, err := seed.Load(context.Background(), db.Pool, f, 7)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func launch(t *testing.T, s *seed.Seeded, j seed.Job) seed.JobKeys {
	t.Helper()
	if j.Show == "" {
		j.Show = "managed"
	}
	k, err := s.Launch(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func job(name string, layers ...seed.Layer) seed.Job {
	if len(layers) == 0 {
		layers = []seed.Layer{{Name: "render", Frames: 3, Cores: 100, Mem: seed.GB}}
	}
	return seed.Job{Name: name, Layers: layers}
}

// rawNotes counts the hints sent: cuesched_work notifications on a plain
// LISTEN connection of its own, and cuesched_work messages (migration 0008's
// retries) on a change stream of its own. collect sends a fence both ways in
// one transaction and returns everything that arrived before it: both are
// delivered in commit order, so whatever an earlier commit sent is in.
// The stream creates a replication slot, which waits for every open
// transaction of the cluster: tests using it stay serial.
type rawNotes struct {
	conn  *pgx.Conn
	db    *pgtest.DB
	msgs  chan cdc.Message
	fence int
}

// msgSink is a change stream's sink that keeps only the messages.
type msgSink chan cdc.Message

func (msgSink) Reset(context.Context, pgx.Tx, cdc.LSN) error { return nil }
func (msgSink) Advance(cdc.LSN)                              {}
func (s msgSink) Apply(t *cdc.Txn) error {
	for _, m := range t.Messages {
		s <- m
	}
	return nil
}

func listenRaw(t *testing.T, db *pgtest.DB) *rawNotes {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN cuesched_work; LISTEN cuesched_test_fence"); err != nil {
		t.Fatal(err)
	}
	r := &rawNotes{conn: conn, db: db, msgs: make(chan cdc.Message, 1024)}
	st := cdc.NewStream(db.DSN, msgSink(r.msgs), slog.New(slog.DiscardHandler))
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); st.Run(sctx) }()
	t.Cleanup(func() { stop(); <-done })
	select {
	case <-st.Ready():
	case <-time.After(deadline):
		t.Fatal("change stream not ready")
	}
	return r
}

// collect returns the notifications sent since the last collect.
func (r *rawNotes) collect(t *testing.T) []string {
	t.Helper()
	notes, msgs := r.collectBoth(t)
	if len(msgs) > 0 {
		t.Errorf("hints sent as change stream messages: %q", msgs)
	}
	return notes
}

// collectBoth returns the notifications and the change stream messages sent
// since the last collect.
func (r *rawNotes) collectBoth(t *testing.T) (notes, msgs []string) {
	t.Helper()
	r.fence++
	fence := fmt.Sprint(r.fence)
	if _, err := r.db.Pool.Exec(context.Background(),
		"SELECT pg_notify('cuesched_test_fence', $1), pg_logical_emit_message(true, 'cuesched_test_fence', $1)", fence); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for {
		n, err := r.conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("waiting for fence %s: %v (got %q)", fence, err, notes)
		}
		if n.Channel == "cuesched_test_fence" {
			if n.Payload == fence {
				break
			}
			continue
		}
		notes = append(notes, n.Payload)
	}
	for {
		select {
		case m := <-r.msgs:
			if m.Prefix == "cuesched_test_fence" {
				if m.Content == fence {
					return notes, msgs
				}
				continue
			}
			if m.Prefix == cdc.WorkChannel {
				msgs = append(msgs, m.Content)
			}
		case <-ctx.Done():
			t.Fatalf("waiting for the stream's fence %s (got %q)", fence, msgs)
		}
	}
}

// harness runs a queue fed by a listener, as `cuesched run --feed events`
// does, and signals every wake.
type harness struct {
	q       *queue.Queue
	l       *cdc.Listener
	changed chan struct{}
	wakes   atomic.Int64
}

func startQueue(t *testing.T, db *pgtest.DB, dsn string) *harness {
	t.Helper()
	h := &harness{changed: make(chan struct{}, 1)}
	h.q = queue.New(db.Pool, nil)
	h.q.Metrics = queue.NewMetrics(prometheus.NewRegistry())
	h.q.OnWork(func(cluster.Key) {
		h.wakes.Add(1)
		select {
		case h.changed <- struct{}{}:
		default:
		}
	})
	h.l = cdc.NewListener(dsn, nil)
	h.l.Metrics = cdc.NewListenMetrics(prometheus.NewRegistry())
	h.l.MinBackoff, h.l.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	h.l.Handle(cdc.WorkChannel, h.q.Notify)
	h.l.OnConnect(h.q.Resync)
	connected := h.l.Connected()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { h.q.Run(ctx); done <- struct{}{} }()
	go func() { h.l.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
	})
	select {
	case <-connected:
	case <-time.After(deadline):
		t.Fatal("listener did not connect")
	}
	return h
}

// waitFor waits until cond holds, checking it again after every wake and
// every read the queue applies.
func (h *harness) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		applied := h.q.Applied()
		if cond() {
			return
		}
		select {
		case <-h.changed:
		case <-applied:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// withStream adds the change stream, as `cuesched run --feed events` has
// it: retries' hints (migration 0008) and a rebuild after every load. dsn
// is the stream's database. It creates a replication slot: tests using it
// stay serial.
func (h *harness) withStream(t *testing.T, db *pgtest.DB, dsn string, observe func(cache.ReplicaEvent)) *cache.Replica {
	t.Helper()
	r := cache.NewReplica(cache.ReplicaConfig{DSN: dsn, Pool: db.Pool, Logger: slog.New(slog.DiscardHandler),
		OnHint: h.q.StreamHint, OnReset: h.q.ResyncLater,
		Observe: observe, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.Ready():
	case <-time.After(deadline):
		t.Fatal("change stream not ready")
	}
	return r
}

// newRole creates a login role named prefix_<database> with the given
// attributes and further SQL (%[1]s is the role's name), dropped at the end
// of the test with whatever it owns or was granted. Tests log in as it to
// hold a feed off (ALTER ROLE ... NOLOGIN) or to act as Cuebot.
func newRole(t *testing.T, db *pgtest.DB, prefix, sql string) string {
	t.Helper()
	ctx := context.Background()
	role := prefix + "_" + db.Name
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(sql, role)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Pool.Exec(ctx, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = $1", role)
		db.Pool.Exec(ctx, fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE IF EXISTS %[1]s", role))
	})
	return role
}

// streamApplied waits until r has applied the change stream up to the
// server's position now: what it hands on by then has been handed on.
func streamApplied(t *testing.T, db *pgtest.DB, r *cache.Replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var lsn cdc.LSN
	if err := db.Pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitApplied(ctx, lsn); err != nil {
		t.Fatal(err)
	}
}

// drainedHints checks that the stream messages sent since the last collect
// are migration 0013's for job, once per layer drained (notifications, the
// launch's, are taken and not checked).
func (r *rawNotes) drainedHints(t *testing.T, job string, layers int) {
	t.Helper()
	want := slices.Repeat([]string{"job:" + job}, layers)
	if _, msgs := r.collectBoth(t); !slices.Equal(msgs, want) {
		t.Errorf("booking the layers' last frames sent messages %q, want %q", msgs, want)
	}
}

func (h *harness) queued(id string) func() bool {
	return func() bool { _, ok := h.q.Layer(id); return ok }
}

func generalKey(t *testing.T, db *pgtest.DB) cluster.Key {
	t.Helper()
	var alloc, facility string
	if err := db.Pool.QueryRow(context.Background(),
		"SELECT pk_alloc, pk_facility FROM alloc WHERE str_name = 'local.general'").Scan(&alloc, &facility); err != nil {
		t.Fatal(err)
	}
	return cluster.Key{Kind: cluster.KindAlloc, Facility: facility, Alloc: alloc}
}

func TestLaunchOf5000FramesSendsOneNotificationAndQueuesEveryLayer(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	raw := listenRaw(t, db)
	raw.collect(t) // the farm's own hints are done with

	var layers []seed.Layer
	for i := range 20 {
		layers = append(layers, seed.Layer{Name: fmt.Sprintf("l%02d", i), Frames: 250, Cores: 200, Mem: 2 * seed.GB,
			CoresMax: 800, Threadable: i%2 == 0, Tags: "General | pool1", Services: "maya, arnold", Limits: []string{"licence"}})
	}
	j := job("big", layers...)
	j.Priority = 42
	j.OS = "linux"
	k := launch(t, s, j)

	if got := raw.collect(t); !slices.Equal(got, []string{"job:" + k.ID}) {
		t.Fatalf("launch sent %q, want exactly [job:%s]", got, k.ID)
	}
	key := generalKey(t, db)
	h.waitFor(t, "20 layers queued", func() bool { return len(h.q.Layers(key)) == 20 })

	l, _ := h.q.Layer(k.Layers["l00"])
	want := match.Layer{ID: k.Layers["l00"], Name: "l00", JobID: k.ID, JobName: "big", ShowID: s.Shows["managed"], ShowName: "managed",
		FolderID: s.Folders["managed/"], DeptID: l.DeptID, Facility: key.Facility, Priority: 42, OS: "linux",
		Tags: []string{"general", "pool1"}, Min: match.Resources{Cores: 200, Mem: 2 * seed.GB}, CoresMax: 800,
		Threadable: true, Services: []string{"maya", "arnold"}, Limits: []string{s.Limits["licence"]}, Waiting: 250}
	if fmt.Sprint(*l) != fmt.Sprint(want) || l.DeptID == "" {
		t.Errorf("queued layer\n got %+v\nwant %+v", *l, want)
	}
	// pool1 is not an allocation tag: the layer is also in that tag's bucket.
	if got := h.q.Clusters(); len(got) != 2 {
		t.Errorf("clusters %v, want the allocation's and pool1's bucket", got)
	}

	ls := h.q.Layers(key)
	if err := h.q.Frames(context.Background(), ls[:2], 10); err != nil {
		t.Fatal(err)
	}
	for _, l := range ls[:2] {
		if len(l.Frames) != 10 {
			t.Fatalf("layer %s: %d frames, want 10", l.Name, len(l.Frames))
		}
		for i, f := range l.Frames {
			if f.Number != int64(i+1) || f.Name != fmt.Sprintf("%04d-%s", i+1, l.Name) || f.ID == "" {
				t.Errorf("layer %s frame %d: %+v, want frame number %d in dispatch order", l.Name, i, f, i+1)
			}
		}
	}
	if n := metricValue(h.q.Metrics.Depth.WithLabelValues(key.String())); n != 20 {
		t.Errorf("depth gauge of %s = %v, want 20", key, n)
	}
}

func TestWorkBecomingDispatchableIsQueued(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	h.withStream(t, db, db.DSN, nil)
	raw := listenRaw(t, db)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	ctx := context.Background()
	raw.collect(t)

	t.Run("depend release", func(t *testing.T) {
		k := launch(t, s, job("dep", seed.Layer{Name: "after", Frames: 3, Cores: 100, Mem: seed.GB, Depend: true}))
		if got := raw.collect(t); len(got) != 0 {
			t.Fatalf("launch of a job whose frames all depend sent %q", got)
		}
		if _, ok := h.q.Layer(k.Layers["after"]); ok {
			t.Fatal("layer with only DEPEND frames is queued")
		}
		if err := s.ReleaseDepends(ctx, k.Layers["after"]); err != nil {
			t.Fatal(err)
		}
		if got := raw.collect(t); !slices.Equal(got, []string{"job:" + k.ID}) {
			t.Errorf("depend release sent %q", got)
		}
		h.waitFor(t, "released layer queued", h.queued(k.Layers["after"]))
	})

	t.Run("retry", func(t *testing.T) {
		k := launch(t, s, job("retry", seed.Layer{Name: "one", Frames: 1, Cores: 100, Mem: seed.GB}))
		id := k.Layers["one"]
		h.waitFor(t, "layer queued", h.queued(id))
		// Taken as dispatch holds it before the booking: the booking's own
		// hint may have the queue drop the layer before dispatch says so.
		l, ok := h.q.Layer(id)
		if !ok {
			t.Fatal("layer not queued")
		}
		frame := k.Frames["0001-one"]
		if _, err := sim.Book(ctx, frame, s.Hosts["127.10.0.1"], 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
		// Dispatch finds the layer without waiting frames and says so.
		if err := h.q.Frames(ctx, []*match.Layer{l}, 0); err != nil || len(l.Frames) != 0 {
			t.Fatalf("frames of a fully booked layer: %v, %v", l.Frames, err)
		}
		h.q.Drained(id)
		if _, ok := h.q.Layer(id); ok {
			t.Fatal("drained layer still queued")
		}
		raw.drainedHints(t, k.ID, 1)
		if err := sim.Retry(ctx, frame); err != nil {
			t.Fatal(err)
		}
		// Through the change stream, not NOTIFY (migration 0008).
		if notes, msgs := raw.collectBoth(t); len(notes) != 0 || !slices.Equal(msgs, []string{"job:" + k.ID}) {
			t.Errorf("retry sent notifications %q and messages %q, want only the message job:%s", notes, msgs, k.ID)
		}
		h.waitFor(t, "retried layer queued", h.queued(id))
	})

	t.Run("unpause", func(t *testing.T) {
		j := job("paused")
		j.Paused = true
		k := launch(t, s, j)
		if got := raw.collect(t); len(got) != 0 {
			t.Fatalf("launch of a paused job sent %q", got)
		}
		if _, err := db.Pool.Exec(ctx, "UPDATE job SET b_paused = false WHERE pk_job = $1", k.ID); err != nil {
			t.Fatal(err)
		}
		if got := raw.collect(t); !slices.Equal(got, []string{"job:" + k.ID}) {
			t.Errorf("unpause sent %q", got)
		}
		h.waitFor(t, "unpaused layer queued", h.queued(k.Layers["render"]))
	})

	t.Run("raised job cap and priority", func(t *testing.T) {
		k := launch(t, s, job("capped"))
		id := k.Layers["render"]
		h.waitFor(t, "layer queued", h.queued(id))
		raw.collect(t)
		// Lowering a cap makes nothing dispatchable: nothing is sent.
		if _, err := db.Pool.Exec(ctx, "UPDATE job_resource SET int_max_cores = 100 WHERE pk_job = $1", k.ID); err != nil {
			t.Fatal(err)
		}
		if got := raw.collect(t); len(got) != 0 {
			t.Errorf("lowered cap sent %q", got)
		}
		before := h.wakes.Load()
		if _, err := db.Pool.Exec(ctx, "UPDATE job_resource SET int_max_cores = 5000 WHERE pk_job = $1", k.ID); err != nil {
			t.Fatal(err)
		}
		if got := raw.collect(t); !slices.Equal(got, []string{"job:" + k.ID}) {
			t.Errorf("raised cap sent %q", got)
		}
		h.waitFor(t, "the layer's cluster woken", func() bool { return h.wakes.Load() > before })
		if _, err := db.Pool.Exec(ctx, "UPDATE job_resource SET int_priority = 77 WHERE pk_job = $1", k.ID); err != nil {
			t.Fatal(err)
		}
		h.waitFor(t, "new priority queued", func() bool { l, ok := h.q.Layer(id); return ok && l.Priority == 77 })
	})
}

// Cuebot's hot writes must cost no notification: host reports, bookings,
// completions to SUCCEEDED and retries of layers that still have waiting
// frames.
func TestCuebotWritesSendNothing(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	raw := listenRaw(t, db)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	ctx := context.Background()
	managed := launch(t, s, job("m", seed.Layer{Name: "render", Frames: 4, Cores: 100, Mem: seed.GB}))
	cuebot := launch(t, s, seed.Job{Name: "c", Show: "cuebot", Layers: []seed.Layer{{Name: "render", Frames: 1, Cores: 100, Mem: seed.GB}}})
	raw.collect(t)

	host := s.Hosts["127.10.0.1"]
	for _, f := range []string{managed.Frames["0001-render"], managed.Frames["0002-render"], cuebot.Frames["0001-render"]} {
		if _, err := sim.Book(ctx, f, host, 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := sim.HostReport(ctx, host, 32*seed.GB); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.Succeed(ctx, managed.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	// The layer still has waiting frames: 2 -> 3 is no transition.
	if err := sim.Retry(ctx, managed.Frames["0002-render"]); err != nil {
		t.Fatal(err)
	}
	// Cuebot's own show: even 0 -> 1 is none of cuesched's business.
	if err := sim.Retry(ctx, cuebot.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	if notes, msgs := raw.collectBoth(t); len(notes)+len(msgs) != 0 {
		t.Errorf("Cuebot's writes sent notifications %q and messages %q", notes, msgs)
	}
}

// Two layers of one job retried in one transaction send two messages with
// the same payload; the queue gets the hint once, as NOTIFY would deliver it.
func TestRetriesInOneTransactionHintOnce(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	r := h.withStream(t, db, db.DSN, nil)
	raw := listenRaw(t, db)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	ctx := context.Background()
	k := launch(t, s, job("twice", seed.Layer{Name: "a", Frames: 1, Cores: 100, Mem: seed.GB},
		seed.Layer{Name: "b", Frames: 1, Cores: 100, Mem: seed.GB}))
	for _, f := range []string{k.Frames["0001-a"], k.Frames["0001-b"]} {
		if _, err := sim.Book(ctx, f, s.Hosts["127.10.0.1"], 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	raw.drainedHints(t, k.ID, 2)
	hints := func() float64 { return metricValue(h.q.Metrics.Payloads.WithLabelValues("job")) }
	streamApplied(t, db, r) // the drained layers' hints counted before
	before := hints()
	if _, err := db.Pool.Exec(ctx, `UPDATE frame SET str_state = 'WAITING', int_version = int_version + 1
		WHERE pk_job = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if notes, msgs := raw.collectBoth(t); len(notes) != 0 || !slices.Equal(msgs, []string{"job:" + k.ID, "job:" + k.ID}) {
		t.Fatalf("sent notifications %q and messages %q, want the message job:%s twice", notes, msgs, k.ID)
	}
	// The instance's stream has handed on all it will once it has applied
	// the position reached now.
	streamApplied(t, db, r)
	if n := hints() - before; n != 1 {
		t.Errorf("the queue got %v job hints, want 1", n)
	}
}

// A layer drained by a booking that was not this queue's (another
// instance's, in a cluster this one does not own) leaves the queue through
// the change stream's hint: a queue that kept it would count it as work in
// its cluster for good (the leader weighs clusters by these counts, and the
// demo's idle probe saw two clusters moved at every job beside such a stale
// bucket). A layer that keeps waiting frames stays.
func TestLayerDrainedElsewhereLeavesTheQueue(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	h.withStream(t, db, db.DSN, nil)
	sim := &cuebotsim.Sim{Pool: db.Pool}
	ctx := context.Background()
	k := launch(t, s, job("drained", seed.Layer{Name: "one", Frames: 1, Cores: 100, Mem: seed.GB},
		seed.Layer{Name: "two", Frames: 2, Cores: 100, Mem: seed.GB}))
	h.waitFor(t, "both layers queued", func() bool {
		return h.queued(k.Layers["one"])() && h.queued(k.Layers["two"])()
	})
	for _, f := range []string{k.Frames["0001-one"], k.Frames["0001-two"]} {
		if _, err := sim.Book(ctx, f, s.Hosts["127.10.0.1"], 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	h.waitFor(t, "the drained layer gone", func() bool { return !h.queued(k.Layers["one"])() })
	if !h.queued(k.Layers["two"])() {
		t.Error("the layer with a frame still waiting left the queue")
	}
}

// The change stream can hand on a retry's hint a moment before the retrying
// transaction is visible to other sessions (cdc's package doc); a read then
// would miss the retry for good, since no other hint follows. Here the hint
// comes while its transaction is still open, the widest form of that gap:
// the read waits for the commit, for a job hint (a refresh) and for an
// allocation hint (a rebuild) alike.
func TestStreamHintWaitsForItsTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	q := queue.New(db.Pool, nil) // no listener: the hint is the only news
	q.Metrics = queue.NewMetrics(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, tc := range []struct{ name, hint string }{
		{"job", "job:"},
		{"alloc", "alloc:" + s.Allocs["local.general"]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := job("held-" + tc.name)
			j.Paused = true
			k := launch(t, s, j)
			hint := tc.hint
			if tc.name == "job" {
				hint += k.ID
			}
			tx, err := db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var xid int64
			if err := tx.QueryRow(ctx, "UPDATE job SET b_paused = false WHERE pk_job = $1 RETURNING txid_current()",
				k.ID).Scan(&xid); err != nil {
				t.Fatal(err)
			}
			waits := metricValue(q.Metrics.VisibilityWaits)
			q.StreamHint(uint32(xid), hint)
			timeout := time.After(deadline)
			for metricValue(q.Metrics.VisibilityWaits) == waits {
				select {
				case <-time.After(time.Millisecond):
				case <-timeout:
					t.Fatal("the read did not wait for the hinting transaction")
				}
			}
			if _, ok := q.Layer(k.Layers["render"]); ok {
				t.Fatal("layer queued before its transaction committed")
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			for {
				applied := q.Applied()
				if _, ok := q.Layer(k.Layers["render"]); ok {
					break
				}
				select {
				case <-applied:
				case <-timeout:
					t.Fatal("timed out waiting for the layer, its transaction committed")
				}
			}
		})
	}
}

// Cuebot's role, with rights on Cuebot's tables and none on cuesched's
// schema, retries a managed show's frame: migration 0008's trigger sends the
// hint in its transaction.
func TestRetryHintSentByCuebotsRole(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx := context.Background()
	role := newRole(t, db, "cuebot", `CREATE ROLE %[1]s LOGIN NOSUPERUSER;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %[1]s`)
	pool, err := pgxpool.New(ctx, db.DSN+" user="+role)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	raw := listenRaw(t, db)
	sim := &cuebotsim.Sim{Pool: pool}
	k := launch(t, s, job("by-cuebot", seed.Layer{Name: "one", Frames: 1, Cores: 100, Mem: seed.GB}))
	frame := k.Frames["0001-one"]
	if _, err := sim.Book(ctx, frame, s.Hosts["127.10.0.1"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	raw.drainedHints(t, k.ID, 1) // sent by Cuebot's role too
	if err := sim.Retry(ctx, frame); err != nil {
		t.Fatalf("Cuebot's role retrying a frame: %v", err)
	}
	if notes, msgs := raw.collectBoth(t); len(notes) != 0 || !slices.Equal(msgs, []string{"job:" + k.ID}) {
		t.Errorf("retry by Cuebot's role sent notifications %q and messages %q, want only the message job:%s", notes, msgs, k.ID)
	}
}

// A retry's hint sent while the change stream is down is lost with the
// stream's temporary slot; the rebuild after the stream's next load finds the
// work anyway.
func TestResyncRecoversRetriesWhileStreamDown(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx := context.Background()
	role := newRole(t, db, "stream", "CREATE ROLE %[1]s LOGIN SUPERUSER")
	h := startQueue(t, db, db.DSN)
	loads := make(chan struct{}, 8)
	h.withStream(t, db, db.DSN+" user="+role, func(e cache.ReplicaEvent) {
		if e.Kind == cache.EventStream && e.Stream.Kind == cdc.EventLoaded {
			loads <- struct{}{}
		}
	})
	<-loads
	sim := &cuebotsim.Sim{Pool: db.Pool}
	k := launch(t, s, job("retried-away", seed.Layer{Name: "one", Frames: 1, Cores: 100, Mem: seed.GB}))
	id, frame := k.Layers["one"], k.Frames["0001-one"]
	h.waitFor(t, "layer queued", h.queued(id))
	if _, err := sim.Book(ctx, frame, s.Hosts["127.10.0.1"], 100, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	l, _ := h.q.Layer(id)
	if err := h.q.Frames(ctx, []*match.Layer{l}, 0); err != nil {
		t.Fatal(err)
	}
	h.q.Drained(id)
	if _, ok := h.q.Layer(id); ok {
		t.Fatal("drained layer still queued")
	}

	// Hold the stream off while the retry commits.
	if _, err := db.Pool.Exec(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
		WHERE usename = $1`, role); err != nil {
		t.Fatal(err)
	}
	if err := sim.Retry(ctx, frame); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.q.Layer(id); ok {
		t.Fatal("retried layer queued while the stream was down")
	}
	if _, err := db.Pool.Exec(ctx, "ALTER ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-loads:
	case <-time.After(deadline):
		t.Fatal("change stream did not load again")
	}
	h.waitFor(t, "retried layer queued after the stream's reload", h.queued(id))
}

// Each trigger fires on its transition only, with the payload naming what to
// re-read.
func TestTriggersNotifyOnTransitionsOnly(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	raw := listenRaw(t, db)
	ctx := context.Background()
	cj := launch(t, s, seed.Job{Name: "c", Show: "cuebot", Layers: []seed.Layer{{Name: "render", Frames: 1, Cores: 100, Mem: seed.GB}}})
	mj := launch(t, s, job("m"))
	managed, cuebot := s.Shows["managed"], s.Shows["cuebot"]
	folder := s.Folders["managed/capped"]
	limit := s.Limits["licence"]
	raw.collect(t)

	for _, c := range []struct {
		name string
		sql  string
		args []any
		want []string
	}{
		{"show made managed", "UPDATE show SET b_scheduler_managed = true WHERE pk_show = $1", []any{cuebot}, []string{"show:" + cuebot}},
		{"managed show touched", "UPDATE show SET b_active = true WHERE pk_show = $1", []any{managed}, nil},
		{"show deactivated", "UPDATE show SET b_active = false WHERE pk_show = $1", []any{cuebot}, nil},
		{"show reactivated", "UPDATE show SET b_active = true WHERE pk_show = $1", []any{cuebot}, []string{"show:" + cuebot}},
		{"burst grows", "UPDATE subscription SET int_burst = int_burst + 100 WHERE pk_show = $1", []any{managed}, []string{"show:" + managed}},
		{"burst shrinks", "UPDATE subscription SET int_burst = int_burst - 100 WHERE pk_show = $1", []any{managed}, nil},
		{"subscription cores move", "UPDATE subscription SET int_cores = int_cores + 100 WHERE pk_show = $1", []any{managed}, nil},
		{"folder cap raised", "UPDATE folder_resource SET int_max_cores = 2000 WHERE pk_folder = $1", []any{folder}, []string{"folder:" + folder}},
		{"folder cap unlimited", "UPDATE folder_resource SET int_max_gpus = -1 WHERE pk_folder = $1", []any{folder}, []string{"folder:" + folder}},
		{"folder cap lowered", "UPDATE folder_resource SET int_max_cores = 10 WHERE pk_folder = $1", []any{folder}, nil},
		{"folder cores move", "UPDATE folder_resource SET int_cores = int_cores + 100 WHERE pk_folder = $1", []any{folder}, nil},
		{"limit raised", "UPDATE limit_record SET int_max_value = 50 WHERE pk_limit_record = $1", []any{limit}, []string{"limit:" + limit}},
		{"limit lowered", "UPDATE limit_record SET int_max_value = 1 WHERE pk_limit_record = $1", []any{limit}, nil},
		{"layer memory raised", "UPDATE layer SET int_mem_min = int_mem_min * 2 WHERE pk_job = $1", []any{mj.ID}, []string{"job:" + mj.ID}},
		{"layer cmd edited", "UPDATE layer SET str_cmd = 'echo hi' WHERE pk_job = $1", []any{mj.ID}, nil},
		{"job moved", "UPDATE job SET pk_folder = $2 WHERE pk_job = $1", []any{mj.ID, folder}, []string{"job:" + mj.ID}},
		{"job paused", "UPDATE job SET b_paused = true WHERE pk_job = $1", []any{mj.ID}, nil},
		{"job unpaused", "UPDATE job SET b_paused = false WHERE pk_job = $1", []any{mj.ID}, []string{"job:" + mj.ID}},
		{"running job unpaused again", "UPDATE job SET b_paused = false WHERE pk_job = $1", []any{cj.ID}, nil},
		{"allocation added", "INSERT INTO alloc (pk_alloc, str_name, str_tag, pk_facility) SELECT 'a-new', 'local.new', 'new', pk_facility FROM alloc WHERE str_name = 'local.general'", nil, []string{"alloc:a-new"}},
	} {
		if _, err := db.Pool.Exec(ctx, c.sql, c.args...); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := raw.collect(t); !slices.Equal(got, c.want) {
			t.Errorf("%s: sent %q, want %q", c.name, got, c.want)
		}
	}
}

// One statement unpausing many jobs sends their ids together, split below
// PostgreSQL's payload limit.
func TestManyJobsInOneStatementShareSplitPayloads(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	raw := listenRaw(t, db)
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		j := job(fmt.Sprintf("p%d", i))
		j.Paused = true
		ids = append(ids, launch(t, s, j).ID)
	}
	raw.collect(t)
	if _, err := db.Pool.Exec(ctx, "UPDATE job SET b_paused = false WHERE pk_job = ANY($1)", ids); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	if got := raw.collect(t); !slices.Equal(got, []string{"job:" + strings.Join(ids, ",")}) {
		t.Errorf("mass unpause sent %q", got)
	}

	// The splitting itself: 500 paused copies of a job, with ids of 36
	// bytes, unpaused in one statement.
	var many []string
	for i := range 500 {
		many = append(many, fmt.Sprintf("%036d", i))
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO job (pk_job, pk_folder, pk_show, str_name, str_visible_name, str_shot,
			str_user, str_state, str_log_dir, b_paused, pk_facility, pk_dept, str_show)
		SELECT id, pk_folder, pk_show, str_name || '-' || id, str_visible_name || '-' || id, str_shot,
			str_user, 'PENDING', str_log_dir, true, pk_facility, pk_dept, str_show
		FROM job, unnest($2::text[]) id WHERE pk_job = $1`, ids[0], many); err != nil {
		t.Fatal(err)
	}
	raw.collect(t)
	if _, err := db.Pool.Exec(ctx, "UPDATE job SET b_paused = false WHERE pk_job = ANY($1)", many); err != nil {
		t.Fatal(err)
	}
	var back []string
	got := raw.collect(t)
	for _, p := range got {
		if len(p) > 7000 {
			t.Errorf("payload of %d bytes", len(p))
		}
		list, ok := strings.CutPrefix(p, "job:")
		if !ok {
			t.Fatalf("payload %.40q lacks its kind", p)
		}
		back = append(back, strings.Split(list, ",")...)
	}
	if len(got) < 3 || !slices.Equal(back, many) {
		t.Errorf("500 ids came back as %d ids in %d payloads", len(back), len(got))
	}
}

// Notifications sent while the listener's backend is gone are lost; the
// resync after the reconnect finds the work anyway.
func TestResyncRecoversWorkNotifiedWhileDisconnected(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx := context.Background()
	role := newRole(t, db, "queue", "CREATE ROLE %[1]s LOGIN SUPERUSER")
	h := startQueue(t, db, db.DSN+" user="+role)
	raw := listenRaw(t, db)

	// Hold the listener off: the role may not log in while the work arrives.
	if _, err := db.Pool.Exec(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	connected := h.l.Connected()
	if _, err := db.Pool.Exec(ctx, "SELECT pg_terminate_backend($1, 10000)", int64(h.l.PID())); err != nil {
		t.Fatal(err)
	}
	k := launch(t, s, job("while-away"))
	if got := raw.collect(t); !slices.Equal(got, []string{"job:" + k.ID}) {
		t.Fatalf("launch sent %q", got)
	}
	if _, ok := h.q.Layer(k.Layers["render"]); ok {
		t.Fatal("layer queued while the listener was away")
	}
	if _, err := db.Pool.Exec(ctx, "ALTER ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(deadline):
		t.Fatal("listener did not reconnect")
	}
	// Connected closes only after the resync has returned.
	if _, ok := h.q.Layer(k.Layers["render"]); !ok {
		t.Fatal("work notified while disconnected not queued after the resync")
	}
	if n := metricValue(h.q.Metrics.Resyncs); n != 2 {
		t.Errorf("queue resyncs = %v, want 2", n)
	}
}

// A read that lands after dispatch read a layer's frames keeps the layer even
// when dispatch then reports it drained: that read may have seen a retry.
func TestDrainedIgnoredAfterNewerRead(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	ctx := context.Background()
	k := launch(t, s, job("d"))
	id := k.Layers["render"]
	h.waitFor(t, "layer queued", h.queued(id))

	l, _ := h.q.Layer(id)
	if err := h.q.Frames(ctx, []*match.Layer{l}, 0); err != nil || len(l.Frames) != 3 {
		t.Fatalf("frames %v, %v; want 3", l.Frames, err)
	}
	before := h.wakes.Load()
	h.q.Requeue(id)
	h.waitFor(t, "requeued layer read", func() bool { return h.wakes.Load() > before })
	h.q.Drained(id)
	if _, ok := h.q.Layer(id); !ok {
		t.Fatal("Drained removed a layer read again after its frames were read")
	}
	if err := h.q.Frames(ctx, []*match.Layer{l}, 0); err != nil {
		t.Fatal(err)
	}
	h.q.Drained(id)
	if _, ok := h.q.Layer(id); ok {
		t.Fatal("Drained after a fresh frames read left the layer queued")
	}
}

// A paused job's layers leave the queue with the next read that covers them,
// and a layer waiting for its start time wakes its cluster when it comes.
// Serial, though it owns its database and creates no slot: the layer must
// be queued before its start time, 300 ms after the launch, comes.
func TestPausedJobLeavesAndStartAfterWakes(t *testing.T) {
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	h := startQueue(t, db, db.DSN)
	ctx := context.Background()
	key := cluster.NewKeyer(nil, 16).OfTag(generalKey(t, db).Facility, "pool7")
	woken := make(chan time.Time, 1)
	h.q.OnWork(func(k cluster.Key) {
		if k == key {
			select {
			case woken <- time.Now():
			default:
			}
		}
	})
	// Far enough ahead that the layers are queued before it comes, on a
	// loaded machine too.
	start := time.Now().Add(time.Second)
	k := launch(t, s, job("later",
		seed.Layer{Name: "now", Frames: 1, Cores: 100, Mem: seed.GB},
		seed.Layer{Name: "later", Frames: 1, Cores: 100, Mem: seed.GB, Tags: "pool7", StartAfter: start}))
	h.waitFor(t, "both layers queued", func() bool { return h.q.Len() == 2 })
	later, _ := h.q.Layer(k.Layers["later"])
	if next, ok := h.q.NextStart(key); time.Now().Before(later.StartAfter) && (!ok || !next.Equal(later.StartAfter)) {
		t.Errorf("NextStart(%s) = %v, %v; want %v", key, next, ok, later.StartAfter)
	}
	select {
	case at := <-woken:
		if at.Before(later.StartAfter) {
			t.Errorf("woken at %v, before the start time %v", at, later.StartAfter)
		}
	case <-time.After(deadline):
		t.Fatal("start-after time came and the cluster was not woken")
	}

	if _, err := db.Pool.Exec(ctx, "UPDATE job SET b_paused = true WHERE pk_job = $1", k.ID); err != nil {
		t.Fatal(err)
	}
	h.q.Requeue(k.Layers["now"])
	h.waitFor(t, "paused job's layers gone", func() bool { return h.q.Len() == 0 })
}

func TestPollModeFindsTheSameWork(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	q := queue.New(db.Pool, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Poll(ctx, 20*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitQueue := func(what string, cond func() bool) {
		t.Helper()
		timeout := time.After(deadline)
		for {
			applied := q.Applied()
			if cond() {
				return
			}
			select {
			case <-applied:
			case <-timeout:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	k := launch(t, s, job("polled"))
	waitQueue("the launched job found", func() bool { _, ok := q.Layer(k.Layers["render"]); return ok })
	if _, err := db.Pool.Exec(ctx, "UPDATE job SET b_paused = true WHERE pk_job = $1", k.ID); err != nil {
		t.Fatal(err)
	}
	waitQueue("the paused job dropped", func() bool { return q.Len() == 0 })
}

func TestMalformedHintsAreCountedAndSkipped(t *testing.T) {
	t.Parallel()
	q := queue.New(nil, nil)
	q.Metrics = queue.NewMetrics(prometheus.NewRegistry())
	for _, p := range []string{"", "job", "job:", "job:a,,b", "nope:abc", "job:a b", "show:" + strings.Repeat("x", 65)} {
		q.Notify(p)
	}
	q.Notify("job:0b7a4b2e-1111-4c4c-9d9d-000000000001,0b7a4b2e-1111-4c4c-9d9d-000000000002")
	if n := metricValue(q.Metrics.Malformed); n != 7 {
		t.Errorf("malformed = %v, want 7", n)
	}
	if n := metricValue(q.Metrics.Payloads.WithLabelValues("job")); n != 1 {
		t.Errorf("job hints = %v, want 1", n)
	}
}

// Each migration's down removes exactly what its up added: 0013's down
// drops the drained layer's trigger, 0009's gives 0004's job trigger its
// helper back, 0008's gives 0004's layer_stat trigger its retries back,
// 0004's removes the rest.
func TestWorkNotifyMigrationsDownAndUp(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	type state struct {
		triggers, functions int
		retryHint           bool // 0004's layer_stat trigger leaves retries to 0008's
	}
	read := func() state {
		t.Helper()
		var st state
		if err := db.Pool.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cuesched\_work\_%'),
				(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
				  WHERE n.nspname = 'cuesched' AND p.proname LIKE 'work\_%'),
				coalesce((SELECT pg_get_triggerdef(oid) LIKE '%int_running_count%' FROM pg_trigger
				  WHERE tgname = 'cuesched_work_layer_waiting'), false)`).Scan(&st.triggers, &st.functions, &st.retryHint); err != nil {
			t.Fatal(err)
		}
		return st
	}
	all := state{14, 9, true}
	if got := read(); got != all {
		t.Fatalf("after up: %+v, want %+v", got, all)
	}
	for _, step := range []struct {
		file string
		want state
	}{
		{"0013_drained_hint.down.sql", state{13, 9, true}},
		{"0009_cuebot_role.down.sql", state{13, 10, true}},
		{"0008_retry_hint.down.sql", state{12, 9, false}},
		{"0004_work_notify.down.sql", state{}},
		{"0004_work_notify.up.sql", state{12, 9, false}},
		{"0008_retry_hint.up.sql", state{13, 10, true}},
		{"0009_cuebot_role.up.sql", state{13, 9, true}},
		{"0013_drained_hint.up.sql", all},
	} {
		sql, err := readMigration(step.file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", step.file, err)
		}
		if got := read(); got != step.want {
			t.Errorf("after %s: %+v, want %+v", step.file, got, step.want)
		}
	}
}

func readMigration(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("..", "migrations", name))
	return string(b), err
}

// Layers of equal priority come in Cuebot's order, whatever their keys: the
// job started first first (job.ts_started), then a job's layers by their
// dispatch order (layer.int_dispatch_order); a higher priority still comes
// before both. The keys are random (Cuebot's UUIDs), so key order would be
// an order of chance, and the simulator (package sim), which orders by
// arrival and dispatch order, would not book what the loop books.
func TestEqualPrioritiesInCuebotsOrder(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	var jobs []seed.JobKeys
	for _, name := range []string{"a", "b", "c", "d"} {
		var layers []seed.Layer
		for _, l := range []string{"x", "y", "z"} {
			layers = append(layers, seed.Layer{Name: l, Frames: 1, Cores: 100, Mem: seed.GB})
		}
		j := job(name, layers...)
		j.Priority = 10
		if name == "d" {
			j.Priority = 20
		}
		jobs = append(jobs, launch(t, s, j))
	}
	// Start order and dispatch order the reverse of key order.
	ctx := context.Background()
	want := map[string][]string{} // job id -> its layer ids in dispatch order
	slices.SortFunc(jobs, func(a, b seed.JobKeys) int { return strings.Compare(b.ID, a.ID) })
	for i, j := range jobs {
		if _, err := db.Pool.Exec(ctx, `UPDATE job SET ts_started = timestamptz '2026-01-01 00:00:00+00' + $2 * interval '1 minute'
			WHERE pk_job = $1`, j.ID, i); err != nil {
			t.Fatal(err)
		}
		for _, l := range j.Layers {
			want[j.ID] = append(want[j.ID], l)
		}
		slices.SortFunc(want[j.ID], func(a, b string) int { return strings.Compare(b, a) })
		for k, l := range want[j.ID] {
			if _, err := db.Pool.Exec(ctx, `UPDATE layer SET int_dispatch_order = $2 WHERE pk_layer = $1`, l, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	var order []string
	d := slices.IndexFunc(jobs, func(j seed.JobKeys) bool { return j.ID == s.Jobs["d"].ID })
	order = append(order, want[jobs[d].ID]...)
	for i, j := range jobs {
		if i != d {
			order = append(order, want[j.ID]...)
		}
	}
	h := startQueue(t, db, db.DSN)
	key := generalKey(t, db)
	h.waitFor(t, "12 layers queued", func() bool { return len(h.q.Layers(key)) == 12 })
	var got []string
	for _, l := range h.q.Layers(key) {
		got = append(got, l.ID)
	}
	if !slices.Equal(got, order) {
		t.Errorf("layers in the order\n%v\nwant\n%v", got, order)
	}
}
