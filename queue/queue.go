package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/wait"
	"github.com/cuesched/cuesched/match"
)

// Metrics are the pending-layer queue's metrics.
type Metrics struct {
	Payloads   *prometheus.CounterVec // hints received, by kind
	Malformed  prometheus.Counter
	Resyncs    prometheus.Counter
	refreshes  prometheus.Counter
	readErrors prometheus.Counter
	// VisibilityWaits counts reads taken again because a stream hint's
	// transaction was not yet visible to them (StreamHint).
	VisibilityWaits prometheus.Counter
	Depth           *prometheus.GaugeVec // queued layers, by cluster
	// RowsSkipped counts rows left out because they cannot be booked, by
	// table and reason (SkipReasons), each once when it is first read so.
	RowsSkipped *prometheus.CounterVec
}

// NewMetrics creates the queue's metrics and registers them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Payloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_queue_notifications_total", Help: "Work hints received, by kind (job, show, folder, limit, alloc)."},
			[]string{"kind"}),
		Malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_queue_malformed_payloads_total", Help: "Work hints that could not be read (logged and skipped)."}),
		Resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_queue_resyncs_total", Help: "Rebuilds of the whole queue from one query (reconnects, polls)."}),
		refreshes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_queue_refreshes_total", Help: "Re-reads of the jobs, shows, folders or limits hints named."}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_queue_read_errors_total", Help: "Failed reads of pending layers (retried)."}),
		VisibilityWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_queue_visibility_waits_total",
			Help: "Reads taken again because a retry hint's transaction, already decoded by the change stream, was not yet visible."}),
		Depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cuesched_queue_layers", Help: "Layers with waiting frames queued, by cluster."}, []string{"cluster"}),
		RowsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_rows_skipped_total",
			Help: "Rows of Cuebot's tables left out because they cannot be booked (logged once each), by table and reason."},
			[]string{"table", "reason"}),
	}
	for _, r := range SkipReasons {
		m.RowsSkipped.WithLabelValues("layer", r) // exported at 0
	}
	m.RowsSkipped.WithLabelValues("frame", SkipNullVersion)
	reg.MustRegister(m.Payloads, m.Malformed, m.Resyncs, m.refreshes, m.readErrors, m.VisibilityWaits, m.Depth,
		m.RowsSkipped)
	return m
}

// Why a pending layer is skipped: the values of RowsSkipped's reason label.
const (
	// SkipNoTags: layer.str_tags names no tag. Cuebot's regex of no tags
	// matches any tagged host, which no cluster of cuesched stands for.
	SkipNoTags = "no-tags"
	// SkipNegativeMinimum: a negative memory, GPU or GPU memory minimum. A
	// proc reserving it would raise its host's idle above the host's total.
	SkipNegativeMinimum = "negative-minimum"
	// SkipNullVersion (table frame): a WAITING frame whose int_version is
	// NULL. Every booking, Cuebot's and cuesched's, is guarded by the version
	// it read, and NULL equals nothing, so it can never be booked.
	SkipNullVersion = "null-version"
)

// SkipReasons are every reason a pending layer is skipped for.
var SkipReasons = []string{SkipNoTags, SkipNegativeMinimum}

// Queue is the pending-layer queue: every layer of a PENDING, unpaused job
// of a managed, active show that has waiting frames, as a *match.Layer,
// grouped by the clusters its tags fall in.
//
// It is fed by hints (Notify, from the cuesched_work notifications, and
// StreamHint, from the retry messages of the change stream: each names a
// job, show, folder, limit or allocation, and the queue re-reads what it
// names in one query), by a
// rebuild from one query (Resync, after every listener connect, and
// ResyncLater, after every load of the change stream, or on a timer in poll
// mode: Poll) and by dispatch
// results (Drained, Requeue). A layer stays queued until a read finds it
// without waiting frames or dispatch reports it drained. Frames are not
// held: Frames reads them on demand.
//
// The loop learns of work through OnWork, called per cluster whenever layers
// of that cluster were (re)read, and when a layer's ts_start_after comes due.
type Queue struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	// Metrics, when set, receives the queue's metrics; Sched, when set,
	// the OpenCue-named job query metrics.
	Metrics *Metrics
	Sched   *metrics.Scheduler
	// MemoryShows are the shows booked with memory from history (setting
	// memory-from-history: names, or "*"): Frames looks for their layers'
	// memory failures. Set before Run.
	MemoryShows []string

	// readMu serialises reads with the applying of their results, so an
	// older read never lands after a newer one.
	readMu sync.Mutex

	mu     sync.Mutex
	keyer  *cluster.Keyer
	layers map[string]*entry
	// skipped are the layers read with waiting frames that cannot be booked
	// (skipReason), kept so each is logged and counted once, not per read.
	skipped map[string]*entry
	// nullFrames are the WAITING frames Frames found with a NULL int_version
	// (logged and counted once each), with their layers: a read that saw all
	// of a layer's waiting frames forgets those it no longer finds.
	nullFrames map[string]string
	clusters   map[cluster.Key]map[string]*entry
	seq        uint64 // bumped by every applied read
	pending    scope
	onWork     []func(cluster.Key)

	kick    chan struct{} // pending grew
	rearm   chan struct{} // start-after times changed
	applied chan struct{} // closed and replaced after every applied read
}

type entry struct {
	layer   *match.Layer // never changed once stored; a read replaces it
	skip    string       // why it cannot be booked ("" when it can), with what is wrong in detail
	detail  string
	keys    []cluster.Key
	touched uint64 // seq of the read that stored it
	read    uint64 // seq when Frames last read it
	started bool   // its start-after time (if any) has passed and been woken
	// Cuebot's order among layers of equal priority: its job's start
	// (job.ts_started), then its dispatch order in the job.
	jobStarted time.Time
	dispatch   int64
}

// New returns an empty queue reading from pool. A nil logger means
// slog.Default().
func New(pool *pgxpool.Pool, logger *slog.Logger) *Queue {
	if logger == nil {
		logger = slog.Default()
	}
	return &Queue{
		pool:       pool,
		log:        logger.With("component", "queue"),
		layers:     map[string]*entry{},
		skipped:    map[string]*entry{},
		nullFrames: map[string]string{},
		clusters:   map[cluster.Key]map[string]*entry{},
		pending:    newScope(),
		kick:       make(chan struct{}, 1),
		rearm:      make(chan struct{}, 1),
		applied:    make(chan struct{}),
	}
}

// OnWork registers fn to be called with a cluster's key when layers of that
// cluster were read (new work, or work whose job, show, folder or limit
// changed), and when a queued layer's start-after time comes due. Calls come
// from the queue's goroutine and from Resync's caller, possibly at once; fn
// must be safe for that and return quickly. Register before Run.
func (q *Queue) OnWork(fn func(cluster.Key)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onWork = append(q.onWork, fn)
}

// Applied returns a channel closed when the queue next applies a read (a
// resync, a poll or a refresh), whether or not it woke a cluster. Take it
// before causing the read you wait for.
func (q *Queue) Applied() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.applied
}

// scope is what a refresh re-reads, and the transactions (by 32-bit xid)
// whose commits the read must see: those of stream hints.
type scope struct {
	all                                  bool
	jobs, shows, folders, layers, limits map[string]struct{}
	after                                map[uint32]struct{}
}

func newScope() scope {
	return scope{jobs: map[string]struct{}{}, shows: map[string]struct{}{}, folders: map[string]struct{}{},
		layers: map[string]struct{}{}, limits: map[string]struct{}{}, after: map[uint32]struct{}{}}
}

func (s scope) empty() bool {
	return !s.all && len(s.jobs)+len(s.shows)+len(s.folders)+len(s.layers)+len(s.limits) == 0
}

func (s scope) merge(o scope) {
	for _, p := range [][2]map[string]struct{}{{s.jobs, o.jobs}, {s.shows, o.shows}, {s.folders, o.folders},
		{s.layers, o.layers}, {s.limits, o.limits}} {
		for k := range p[1] {
			p[0][k] = struct{}{}
		}
	}
	for x := range o.after {
		s.after[x] = struct{}{}
	}
}

func (s scope) xids() []uint32 {
	out := make([]uint32, 0, len(s.after))
	for x := range s.after {
		out = append(out, x)
	}
	return out
}

// covers reports whether a queued layer falls in the scope, so that a read
// of the scope not returning it means it has no waiting frames left.
func (s scope) covers(l *match.Layer) bool {
	if s.all {
		return true
	}
	_, job := s.jobs[l.JobID]
	_, show := s.shows[l.ShowID]
	_, folder := s.folders[l.FolderID]
	_, layer := s.layers[l.ID]
	if job || show || folder || layer {
		return true
	}
	for _, id := range l.Limits {
		if _, ok := s.limits[id]; ok {
			return true
		}
	}
	return false
}

func keys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Notify takes one cuesched_work payload ("kind:id[,id...]") and schedules
// the re-read it asks for. It never blocks and never queries: it is the
// listener's handler. A malformed payload is logged, counted and skipped.
func (q *Queue) Notify(payload string) { q.hint(0, payload) }

// StreamHint is Notify for a hint the change stream decoded from the
// transaction xid (cache.Replica's OnHint). PostgreSQL delivers a NOTIFY only
// once its transaction is visible, but the stream can decode a commit a
// moment before the committing session has left the proc array, and a read
// then would miss the retry for good: the read this hint asks for waits
// until its snapshot sees xid committed.
func (q *Queue) StreamHint(xid uint32, payload string) { q.hint(xid, payload) }

func (q *Queue) hint(xid uint32, payload string) {
	kind, ids, err := parseHint(payload)
	if err != nil {
		if len(payload) > 200 {
			payload = payload[:200] + "..."
		}
		q.log.Warn("malformed work hint skipped", "channel", cdc.WorkChannel, "payload", payload, "err", err)
		if q.Metrics != nil {
			q.Metrics.Malformed.Inc()
		}
		return
	}
	q.mu.Lock()
	var set map[string]struct{}
	switch kind {
	case "job":
		set = q.pending.jobs
	case "show":
		set = q.pending.shows
	case "folder":
		set = q.pending.folders
	case "limit":
		set = q.pending.limits
	case "alloc":
		// Allocations decide cluster keys: rebuild everything.
		q.pending.all = true
	}
	for _, id := range ids {
		if set != nil {
			set[id] = struct{}{}
		}
	}
	if xid != 0 {
		q.pending.after[xid] = struct{}{}
	}
	q.mu.Unlock()
	if q.Metrics != nil {
		q.Metrics.Payloads.WithLabelValues(kind).Inc()
	}
	q.signal(q.kick)
}

// parseHint reads a cuesched_work payload, "kind:id[,id...]" as
// migrations/0004 and 0008 send it; the error says what is wrong with one
// that is not.
func parseHint(payload string) (kind string, ids []string, err error) {
	kind, list, ok := strings.Cut(payload, ":")
	if !ok {
		return "", nil, errors.New(`no "kind:" prefix`)
	}
	switch kind {
	case "job", "show", "folder", "limit", "alloc":
	default:
		if len(kind) > 20 {
			kind = kind[:20] + "..."
		}
		return "", nil, fmt.Errorf("kind %q is not job, show, folder, limit or alloc", kind)
	}
	ids = strings.Split(list, ",")
	for i, id := range ids {
		switch {
		case id == "":
			return "", nil, fmt.Errorf("id %d of %d is empty", i+1, len(ids))
		case !validID(id):
			if len(id) > 70 {
				id = id[:70] + "..."
			}
			return "", nil, fmt.Errorf("id %d of %d %q is not a key (1 to 64 letters, digits, '-', '_' or '.')", i+1, len(ids), id)
		}
	}
	return kind, ids, nil
}

// validID accepts what Cuebot's keys look like (VARCHAR(36) UUID strings)
// with some room, and nothing that could not be a key.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (q *Queue) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Requeue asks for the layers to be read again (with their jobs) and their
// clusters woken: for dispatch when a booking failed for a reason that may
// have changed what the queue holds (a stale frame version, a cap it did not
// know). It never blocks.
func (q *Queue) Requeue(layerIDs ...string) {
	q.mu.Lock()
	for _, id := range layerIDs {
		q.pending.layers[id] = struct{}{}
	}
	q.mu.Unlock()
	q.signal(q.kick)
}

// Drained removes a layer dispatch found without waiting frames. It is
// honoured only when no read has stored the layer since the last Frames call
// that covered it: a read after that may have seen frames made waiting since
// (a retry), and then the layer stays.
func (q *Queue) Drained(layerID string) {
	q.mu.Lock()
	e, ok := q.layers[layerID]
	if !ok || e.read == 0 || e.touched > e.read {
		q.mu.Unlock()
		return
	}
	q.remove(e)
	changed := e.keys
	q.mu.Unlock()
	q.setDepth(changed)
}

// remove takes e out of the maps; q.mu held.
func (q *Queue) remove(e *entry) {
	delete(q.layers, e.layer.ID)
	for _, k := range e.keys {
		if m := q.clusters[k]; m != nil {
			delete(m, e.layer.ID)
			if len(m) == 0 {
				delete(q.clusters, k)
			}
		}
	}
}

// put stores e, replacing any entry of the same layer; q.mu held.
func (q *Queue) put(e *entry) {
	if old, ok := q.layers[e.layer.ID]; ok {
		q.remove(old)
	}
	q.layers[e.layer.ID] = e
	for _, k := range e.keys {
		m := q.clusters[k]
		if m == nil {
			m = map[string]*entry{}
			q.clusters[k] = m
		}
		m[e.layer.ID] = e
	}
}

// Layers returns copies of the queued layers of a cluster (Frames empty),
// highest priority first, then in Cuebot's order: the job started first
// first, a job's layers in dispatch order (keys break what ties remain).
// Keys alone would order equal priorities by chance (Cuebot's keys are
// random), and the simulator, which follows Cuebot's order, would then book
// other layers than the loop. The copies share their Tags, Services and
// Limits with the queue: read them, never change them. A layer whose
// StartAfter lies in the future is included; matching holds it back.
func (q *Queue) Layers(key cluster.Key) []*match.Layer {
	// Copied under the lock: a read applied meanwhile changes entries.
	type queued struct {
		l          *match.Layer
		jobStarted time.Time
		dispatch   int64
	}
	q.mu.Lock()
	qs := make([]queued, 0, len(q.clusters[key]))
	for _, e := range q.clusters[key] {
		c := *e.layer
		qs = append(qs, queued{&c, e.jobStarted, e.dispatch})
	}
	q.mu.Unlock()
	sort.Slice(qs, func(i, j int) bool {
		a, b := qs[i], qs[j]
		switch {
		case a.l.Priority != b.l.Priority:
			return a.l.Priority > b.l.Priority
		case !a.jobStarted.Equal(b.jobStarted):
			return a.jobStarted.Before(b.jobStarted)
		case a.l.JobID != b.l.JobID:
			return a.l.JobID < b.l.JobID
		case a.dispatch != b.dispatch:
			return a.dispatch < b.dispatch
		}
		return a.l.ID < b.l.ID
	})
	out := make([]*match.Layer, len(qs))
	for i, x := range qs {
		out[i] = x.l
	}
	return out
}

// Layer returns a copy of one queued layer.
func (q *Queue) Layer(id string) (*match.Layer, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.layers[id]
	if !ok {
		return nil, false
	}
	c := *e.layer
	return &c, true
}

// Clusters returns the keys of the clusters that have queued layers, in key
// order.
func (q *Queue) Clusters() []cluster.Key {
	q.mu.Lock()
	out := make([]cluster.Key, 0, len(q.clusters))
	for k := range q.clusters {
		out = append(out, k)
	}
	q.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Depths is the number of queued layers of every cluster that has any: the
// pending work ownership balances instances by. It reads memory only.
func (q *Queue) Depths() map[cluster.Key]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[cluster.Key]int64, len(q.clusters))
	for k, ls := range q.clusters {
		if len(ls) > 0 {
			out[k] = int64(len(ls))
		}
	}
	return out
}

// Len is the number of queued layers.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.layers)
}

// NextStart is the earliest ts_start_after still in the future among a
// cluster's queued layers, for the loop's timer (the queue also wakes the
// cluster through OnWork when it comes).
func (q *Queue) NextStart(key cluster.Key) (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	now := time.Now()
	for _, e := range q.clusters[key] {
		if t := e.layer.StartAfter; t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, !next.IsZero()
}

// layerQuery reads pending layers with everything matching needs. The scope
// (when given) names jobs; everything else is expanded to jobs first.
const layerQuery = `
SELECT l.pk_layer, l.str_name, j.pk_job, j.str_name, j.pk_show, s.str_name, j.pk_folder, j.pk_dept, j.pk_facility,
       jr.int_priority, coalesce(j.str_os, ''), l.str_tags, l.int_cores_min, l.int_mem_min, l.int_gpus_min,
       l.int_gpu_mem_min, l.int_cores_max, l.b_threadable, l.str_services, l.ts_start_after,
       ARRAY(SELECT ll.pk_limit_record::text FROM layer_limit ll WHERE ll.pk_layer = l.pk_layer ORDER BY 1),
       ls.int_waiting_count, j.ts_started, l.int_dispatch_order
  FROM job j
  JOIN show s ON s.pk_show = j.pk_show
  JOIN job_resource jr ON jr.pk_job = j.pk_job
  JOIN layer_stat ls ON ls.pk_job = j.pk_job
  JOIN layer l ON l.pk_layer = ls.pk_layer
 WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND NOT j.b_paused
   AND s.b_scheduler_managed AND s.b_active`

const scopeFilter = `
   AND j.pk_job IN (
       SELECT unnest($1::text[])
       UNION SELECT pk_job FROM job WHERE pk_show = ANY($2::text[]) AND str_state = 'PENDING'
       UNION SELECT pk_job FROM job WHERE pk_folder = ANY($3::text[]) AND str_state = 'PENDING'
       UNION SELECT pk_job FROM layer WHERE pk_layer = ANY($4::text[])
       UNION SELECT l2.pk_job FROM layer_limit ll JOIN layer l2 ON l2.pk_layer = ll.pk_layer
              WHERE ll.pk_limit_record = ANY($5::text[]))`

// allocQuery reads what cluster keys are made of.
const allocQuery = `SELECT pk_alloc, pk_facility, coalesce(str_tag, ''),
       coalesce((SELECT value FROM cuesched.setting WHERE name = 'tag_buckets'), '1') FROM alloc`

// Resync rebuilds the whole queue from one query (after reading the
// allocations cluster keys are made of) and wakes every cluster with work.
// It is the listener's OnConnect: notifications sent while no listener was
// connected are gone, and this is what makes them good.
func (q *Queue) Resync(ctx context.Context) error {
	q.readMu.Lock()
	defer q.readMu.Unlock()
	// Hints that arrived before this read starts are covered by it.
	q.mu.Lock()
	taken := q.pending
	q.pending = newScope()
	q.mu.Unlock()
	err := q.resyncLocked(ctx, taken.xids())
	if err != nil {
		q.mu.Lock()
		q.pending.merge(taken)
		q.pending.all = q.pending.all || taken.all
		q.mu.Unlock()
	}
	return err
}

// ResyncLater has the queue's goroutine rebuild the whole queue, as Resync
// does, without blocking the caller: it is the replication stream's OnReset,
// since the retry hints the stream carries (migration 0008) are gone while
// it is down.
func (q *Queue) ResyncLater() {
	q.mu.Lock()
	q.pending.all = true
	q.mu.Unlock()
	q.signal(q.kick)
}

func (q *Queue) resyncLocked(ctx context.Context, after []uint32) error {
	keyer, err := q.readKeyer(ctx)
	if err != nil {
		q.readFailed()
		return err
	}
	layers, err := q.readLayers(ctx, keyer, nil, after)
	if err != nil {
		q.readFailed()
		return err
	}
	q.mu.Lock()
	q.keyer = keyer
	q.seq++
	changed := map[cluster.Key]struct{}{}
	for k := range q.clusters {
		changed[k] = struct{}{}
	}
	old, oldSkipped := q.layers, q.skipped
	q.layers, q.skipped = map[string]*entry{}, map[string]*entry{}
	q.clusters = map[cluster.Key]map[string]*entry{}
	wake, report := q.store(layers, old, oldSkipped, changed)
	q.mu.Unlock()
	if q.Metrics != nil {
		q.Metrics.Resyncs.Inc()
	}
	q.reportSkipped(report)
	q.finish(changed, wake)
	return nil
}

// store puts freshly read layers in; q.mu held. It returns the clusters to
// wake (those of layers that may start now) and the layers newly skipped
// (not in oldSkipped for the same reason), and adds every touched cluster
// to changed.
func (q *Queue) store(layers []*entry, old, oldSkipped map[string]*entry,
	changed map[cluster.Key]struct{}) (wake map[cluster.Key]struct{}, report []*entry) {
	now := time.Now()
	wake = map[cluster.Key]struct{}{}
	for _, e := range layers {
		if e.skip != "" {
			if cur, ok := q.layers[e.layer.ID]; ok {
				q.remove(cur)
				for _, k := range cur.keys {
					changed[k] = struct{}{}
				}
			}
			if prev, ok := oldSkipped[e.layer.ID]; !ok || prev.skip != e.skip {
				report = append(report, e)
			}
			q.skipped[e.layer.ID] = e
			continue
		}
		delete(q.skipped, e.layer.ID)
		e.touched = q.seq
		if prev, ok := old[e.layer.ID]; ok {
			e.read = prev.read
		}
		e.started = !e.layer.StartAfter.After(now)
		q.put(e)
		for _, k := range e.keys {
			changed[k] = struct{}{}
			if e.started {
				wake[k] = struct{}{}
			}
		}
	}
	return wake, report
}

// reportSkipped logs and counts layers newly skipped: once per layer and
// reason, however often reads find it again.
func (q *Queue) reportSkipped(report []*entry) {
	for _, e := range report {
		l := e.layer
		q.log.Warn("pending layer skipped: Cuebot's row cannot be booked; fix the layer in Cuebot",
			"table", "layer", "reason", e.skip, "layer", l.ID, "name", l.Name, "job", l.JobName, "detail", e.detail)
		if q.Metrics != nil {
			q.Metrics.RowsSkipped.WithLabelValues("layer", e.skip).Inc()
		}
	}
}

// finish publishes a change: depth metrics, the start-after timer, wakes.
func (q *Queue) finish(changed, wake map[cluster.Key]struct{}) {
	ks := make([]cluster.Key, 0, len(changed))
	for k := range changed {
		ks = append(ks, k)
	}
	q.setDepth(ks)
	q.signal(q.rearm)
	q.mu.Lock()
	close(q.applied)
	q.applied = make(chan struct{})
	q.mu.Unlock()
	q.wake(wake)
}

func (q *Queue) wake(set map[cluster.Key]struct{}) {
	if len(set) == 0 {
		return
	}
	ks := make([]cluster.Key, 0, len(set))
	for k := range set {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].Less(ks[j]) })
	q.mu.Lock()
	fns := q.onWork
	q.mu.Unlock()
	for _, k := range ks {
		for _, fn := range fns {
			fn(k)
		}
	}
}

func (q *Queue) setDepth(ks []cluster.Key) {
	if q.Metrics == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range ks {
		q.Metrics.Depth.WithLabelValues(k.String()).Set(float64(len(q.clusters[k])))
	}
}

func (q *Queue) readFailed() {
	if q.Metrics != nil {
		q.Metrics.readErrors.Inc()
	}
}

// refresh re-reads what sc names and applies it.
func (q *Queue) refresh(ctx context.Context, sc scope) error {
	q.readMu.Lock()
	defer q.readMu.Unlock()
	q.mu.Lock()
	keyer := q.keyer
	q.mu.Unlock()
	if sc.all || keyer == nil {
		return q.resyncLocked(ctx, sc.xids())
	}
	layers, err := q.readLayers(ctx, keyer, &sc, sc.xids())
	if err != nil {
		q.readFailed()
		return err
	}
	q.mu.Lock()
	// The read expanded the scope to whole jobs: every queued layer of a job
	// it covered is covered too.
	for _, e := range layers {
		sc.jobs[e.layer.JobID] = struct{}{}
	}
	for _, e := range q.layers {
		if sc.covers(e.layer) {
			sc.jobs[e.layer.JobID] = struct{}{}
		}
	}
	q.seq++
	changed := map[cluster.Key]struct{}{}
	fresh := map[string]bool{}
	for _, e := range layers {
		fresh[e.layer.ID] = true
	}
	for id, e := range q.layers {
		if !fresh[id] && sc.covers(e.layer) {
			q.remove(e)
			for _, k := range e.keys {
				changed[k] = struct{}{}
			}
		}
	}
	for id, e := range q.skipped {
		if !fresh[id] && sc.covers(e.layer) {
			delete(q.skipped, id)
		}
	}
	wake, report := q.store(layers, q.layers, q.skipped, changed)
	q.mu.Unlock()
	if q.Metrics != nil {
		q.Metrics.refreshes.Inc()
	}
	q.reportSkipped(report)
	q.finish(changed, wake)
	return nil
}

func (q *Queue) readKeyer(ctx context.Context) (*cluster.Keyer, error) {
	rows, err := q.pool.Query(ctx, allocQuery)
	if err != nil {
		return nil, fmt.Errorf("read allocations: %w", err)
	}
	var allocs []cluster.Alloc
	setting := "1"
	for rows.Next() {
		var a cluster.Alloc
		if err := rows.Scan(&a.ID, &a.Facility, &a.Tag, &setting); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read allocations: %w", err)
		}
		allocs = append(allocs, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read allocations: %w", err)
	}
	buckets, err := strconv.Atoi(setting)
	if err != nil || buckets < 1 {
		// Every instance reads the same value, so they still agree.
		q.log.Error("setting tag_buckets is not a positive whole number; using 1", "value", setting)
		buckets = 1
	}
	return cluster.NewKeyer(allocs, buckets), nil
}

// visibleWithin bounds how long a read waits for hinting transactions to
// become visible. A decoded commit becomes visible within microseconds, so
// only a stalled server reaches it; the read is then retried with backoff.
const visibleWithin = 10 * time.Second

// readLayers reads the pending layers sc names (all when sc is nil) with a
// snapshot that sees the transactions after committed.
func (q *Queue) readLayers(ctx context.Context, keyer *cluster.Keyer, sc *scope, after []uint32) ([]*entry, error) {
	sql, args := layerQuery, []any(nil)
	if sc != nil {
		sql += scopeFilter
		args = []any{keys(sc.jobs), keys(sc.shows), keys(sc.folders), keys(sc.layers), keys(sc.limits)}
	}
	start := time.Now()
	if len(after) == 0 {
		rows, err := q.pool.Query(ctx, sql, args...)
		if err != nil {
			return nil, fmt.Errorf("read pending layers: %w", err)
		}
		return q.scanLayers(rows, keyer, start)
	}
	pause := time.Millisecond
	give := start.Add(visibleWithin)
	for {
		out, visible, err := q.readAfter(ctx, keyer, sql, args, after, start)
		if err != nil || visible {
			return out, err
		}
		if q.Metrics != nil {
			q.Metrics.VisibilityWaits.Inc()
		}
		if time.Now().After(give) {
			return nil, fmt.Errorf("read pending layers: transactions %v decoded as committed but not visible after %s",
				after, visibleWithin)
		}
		if !wait.Sleep(ctx, pause) {
			return nil, fmt.Errorf("read pending layers: %w", ctx.Err())
		}
		pause = min(2*pause, 50*time.Millisecond)
		start = time.Now()
	}
}

// readAfter reads the layers with a snapshot it first checks against the
// transactions after, in one round trip: the check and the read share a
// REPEATABLE READ transaction. What it read is dropped when the snapshot
// does not see them all.
func (q *Queue) readAfter(ctx context.Context, keyer *cluster.Keyer, sql string, args []any, after []uint32,
	start time.Time) ([]*entry, bool, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
	b.Queue("SELECT pg_current_snapshot()::text")
	b.Queue(sql, args...)
	b.Queue("COMMIT")
	br := q.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, false, fmt.Errorf("read pending layers: begin: %w", err)
	}
	var snap string
	if err := br.QueryRow().Scan(&snap); err != nil {
		return nil, false, fmt.Errorf("read pending layers: take snapshot: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, false, fmt.Errorf("read pending layers: %w", err)
	}
	out, err := q.scanLayers(rows, keyer, start)
	if err != nil {
		return nil, false, err
	}
	if _, err := br.Exec(); err != nil {
		return nil, false, fmt.Errorf("read pending layers: commit: %w", err)
	}
	visible, err := snapshotSees(snap, after)
	if err != nil {
		return nil, false, fmt.Errorf("read pending layers: %w", err)
	}
	if !visible {
		return nil, false, nil
	}
	return out, true, nil
}

// snapshotSees reports whether a snapshot, in pg_snapshot's text form
// ("xmin:xmax:xip,..."), sees the transactions xids, all known to have
// committed, as committed: it does not see one at or after its xmax or one
// it lists in progress. An xid is the low 32 bits of an xid8, compared
// modulo 2^32 as PostgreSQL compares them.
func snapshotSees(snap string, xids []uint32) (bool, error) {
	parts := strings.Split(snap, ":")
	if len(parts) != 3 {
		return false, fmt.Errorf("snapshot %q: want xmin:xmax:xip", snap)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return false, fmt.Errorf("snapshot %q: xmax: %w", snap, err)
	}
	var xip []uint32
	if parts[2] != "" {
		for _, f := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return false, fmt.Errorf("snapshot %q: xip: %w", snap, err)
			}
			xip = append(xip, uint32(x))
		}
	}
	for _, x := range xids {
		if int32(x-uint32(xmax)) >= 0 || slices.Contains(xip, x) {
			return false, nil
		}
	}
	return true, nil
}

// scanLayers reads the layer query's rows; start is when the query was
// sent, for the OpenCue-named query metrics.
func (q *Queue) scanLayers(rows pgx.Rows, keyer *cluster.Keyer, start time.Time) ([]*entry, error) {
	defer rows.Close()
	var out []*entry
	jobs := map[string]struct{}{}
	for rows.Next() {
		var l match.Layer
		var tags, services string
		var startAfter, jobStarted *time.Time
		var dispatch int64
		if err := rows.Scan(&l.ID, &l.Name, &l.JobID, &l.JobName, &l.ShowID, &l.ShowName, &l.FolderID, &l.DeptID, &l.Facility,
			&l.Priority, &l.OS, &tags, &l.Min.Cores, &l.Min.Mem, &l.Min.GPUs, &l.Min.GPUMem, &l.CoresMax,
			&l.Threadable, &services, &startAfter, &l.Limits, &l.Waiting, &jobStarted, &dispatch); err != nil {
			return nil, fmt.Errorf("read pending layers: %w", err)
		}
		l.Tags = cluster.SplitLayerTags(tags)
		l.Services = SplitServices(services)
		if startAfter != nil {
			l.StartAfter = *startAfter
		}
		if len(l.Limits) == 0 {
			l.Limits = nil
		}
		jobs[l.JobID] = struct{}{}
		e := &entry{layer: &l, dispatch: dispatch}
		if jobStarted != nil {
			e.jobStarted = *jobStarted
		}
		if e.skip, e.detail = SkipReason(&l, tags); e.skip == "" {
			e.keys = keyer.OfLayer(l.Facility, l.Tags)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending layers: %w", err)
	}
	if q.Sched != nil {
		q.Sched.JobQueryDuration.Observe(time.Since(start).Seconds())
		q.Sched.JobsQueried.Add(float64(len(jobs)))
	}
	return out, nil
}

// SkipReason says why a layer read with waiting frames cannot be booked
// (one of SkipReasons), with what is wrong and what to do; "" when it can.
// tags is the layer.str_tags l.Tags was read from. Cuebot's schema allows
// these values (no CHECK constraints), so they are skipped, never a crash.
func SkipReason(l *match.Layer, tags string) (reason, detail string) {
	switch {
	case len(l.Tags) == 0:
		return SkipNoTags, fmt.Sprintf("str_tags %q names no tag: give the layer the tag of the hosts it runs on", tags)
	case l.Min.Mem < 0 || l.Min.GPUs < 0 || l.Min.GPUMem < 0:
		return SkipNegativeMinimum, fmt.Sprintf("int_mem_min %d, int_gpus_min %d, int_gpu_mem_min %d: set each to 0 or more",
			l.Min.Mem, l.Min.GPUs, l.Min.GPUMem)
	}
	return "", ""
}

// SplitServices splits layer.str_services, Cuebot's comma-separated list,
// as the queue reads it.
func SplitServices(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// framesQuery reads the first WAITING frames of each layer in Cuebot's order,
// only while the layer's job and show may still be booked. Frames whose
// int_version is NULL (no booking can match it) come after all the others,
// so they never stand in the way of a bookable one; Frames skips them.
//
// With them comes each layer's history (match.History), read fresh every
// round as frames finish: layer_stat by its unique pk_layer index and
// layer_mem by its primary key (Cuebot's layer trigger gives pk_layer_mem
// the layer's id; a row made otherwise is not found and the layer is not
// trimmed), one index probe each per layer. Whether a frame was killed for
// its memory (int_exit_status 33) is looked for only in a layer that could
// be trimmed ($3: its show is booked from history and enough frames
// finished, $4): a second pass over the layer's frames by the same index
// the waiting frames were just read by, on the pages that read brought in.
//
// Both passes read the layer's frames by its index and filter them after,
// whatever the statistics say (each OFFSET 0 keeps the planner from pushing
// the filter into the scan). Statistics taken before a burst of submissions,
// or none after pg_upgrade or a restore, make WAITING look rare: the planner
// then ANDed the layer's index with every WAITING entry of frame's state
// index once a layer (the 1,200 layers of a freshly seeded peer stress farm
// read in 210 ms instead of 30), and looked for exit status 33 by scanning
// frame whole.
//
// And the mean run of the layer's and of its job's finished frames
// (match.Runs: reservations), Cuebot's layer_usage and job_usage (clock
// seconds of the successes over their count, kept by Cuebot as frames
// complete), one probe of each by its unique pk_layer or pk_job index.
//
// The four history reads are scalar subqueries of the layers' own read, kept
// whole by OFFSET 0 so that they run once a layer, not joins: a join of
// eight tables took PostgreSQL 2.5-3.5 ms to plan against 5-6 ms to run on
// an idle machine (BENCHMARKS.md, "End to end against the write floor"), and
// every read of a cluster's frames is planned afresh. Each key is unique, so
// each subquery finds at most one row.
const framesQuery = `
SELECT f.pk_layer, f.pk_frame, f.str_name, f.int_version, f.int_number,
       c.succeeded, c.max_rss, h.failed, c.layer_run, c.job_run
  FROM (SELECT l.pk_layer, s.str_name AS show_name,
               coalesce((SELECT ls.int_succeeded_count FROM layer_stat ls WHERE ls.pk_layer = l.pk_layer), 0) AS succeeded,
               coalesce((SELECT lm.int_max_rss FROM layer_mem lm
                          WHERE lm.pk_layer_mem = l.pk_layer AND lm.pk_layer = l.pk_layer), 0) AS max_rss,
               coalesce((SELECT lu.int_clock_time_success / nullif(lu.int_frame_success_count, 0)
                           FROM layer_usage lu WHERE lu.pk_layer = l.pk_layer), 0) AS layer_run,
               coalesce((SELECT ju.int_clock_time_success / nullif(ju.int_frame_success_count, 0)
                           FROM job_usage ju WHERE ju.pk_job = l.pk_job), 0) AS job_run
          FROM unnest($1::text[]) AS t(pk_layer)
          JOIN layer l ON l.pk_layer = t.pk_layer
          JOIN job j ON j.pk_job = l.pk_job
          JOIN show s ON s.pk_show = j.pk_show
         WHERE j.str_state = 'PENDING' AND NOT j.b_paused AND s.b_scheduler_managed AND s.b_active
        OFFSET 0) c
 CROSS JOIN LATERAL (
       SELECT CASE WHEN c.succeeded >= $4 AND ('*' = ANY($3::text[]) OR c.show_name = ANY($3::text[]))
              THEN EXISTS (SELECT 1 FROM (SELECT x.int_exit_status FROM frame x WHERE x.pk_layer = c.pk_layer OFFSET 0) x
                            WHERE x.int_exit_status = 33)
              ELSE false END AS failed) h
 CROSS JOIN LATERAL (
       SELECT fr.pk_layer, fr.pk_frame, fr.str_name, fr.int_version, fr.int_number, fr.int_dispatch_order,
              fr.int_layer_order
         FROM (SELECT * FROM frame fr WHERE fr.pk_layer = c.pk_layer OFFSET 0) fr
        WHERE fr.str_state = 'WAITING'
        ORDER BY fr.int_version IS NULL, fr.int_dispatch_order, fr.int_layer_order
        LIMIT $2) f
 ORDER BY f.pk_layer, f.int_dispatch_order, f.int_layer_order`

// Frames reads the WAITING frames of the given layers (copies from Layers)
// in one query and sets each layer's Frames, in Cuebot's dispatch order
// (frame.int_dispatch_order, then int_layer_order), at most limit per layer
// (limit <= 0: all), with the int_version a booking is guarded by. A layer
// whose job was paused or finished, or whose show is no longer managed, gets
// none, so dispatch reports it Drained.
func (q *Queue) Frames(ctx context.Context, layers []*match.Layer, limit int) error {
	if len(layers) == 0 {
		return nil
	}
	ids := make([]string, len(layers))
	byID := make(map[string][]*match.Layer, len(layers))
	for i, l := range layers {
		ids[i] = l.ID
		l.Frames = nil
		byID[l.ID] = append(byID[l.ID], l)
	}
	q.mu.Lock()
	seq := q.seq
	for _, id := range ids {
		if e, ok := q.layers[id]; ok {
			e.read = seq
		}
	}
	q.mu.Unlock()
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := q.pool.Query(ctx, framesQuery, ids, lim, q.MemoryShows, match.MinFinished)
	if err != nil {
		return fmt.Errorf("read waiting frames of %d layers: %w", len(layers), err)
	}
	defer rows.Close()
	var null []match.Frame
	var nullLayers []string
	for rows.Next() {
		var layerID string
		var f match.Frame
		var version *int32
		var h match.History
		var layerRun, jobRun int64 // seconds
		if err := rows.Scan(&layerID, &f.ID, &f.Name, &version, &f.Number, &h.Finished, &h.MaxRSS, &h.MemFailed,
			&layerRun, &jobRun); err != nil {
			return fmt.Errorf("read waiting frames: %w", err)
		}
		for _, l := range byID[layerID] {
			l.History = h
			l.Runs.Layer, l.Runs.Job = time.Duration(layerRun)*time.Second, time.Duration(jobRun)*time.Second
		}
		if version == nil {
			null, nullLayers = append(null, f), append(nullLayers, layerID)
			continue
		}
		f.Version = *version
		for _, l := range byID[layerID] {
			l.Frames = append(l.Frames, f)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read waiting frames: %w", err)
	}
	q.mu.Lock()
	known := len(q.nullFrames) > 0
	q.mu.Unlock()
	if len(null) == 0 && !known {
		return nil
	}
	// A layer read whole (no limit, or fewer rows than it) has all its
	// NULL-version frames in this read.
	nulls := map[string]int{}
	for _, id := range nullLayers {
		nulls[id]++
	}
	whole := func(layer string) bool {
		ls, ok := byID[layer]
		return ok && (limit <= 0 || len(ls[0].Frames)+nulls[layer] < limit)
	}
	q.reportNullFrames(null, nullLayers, whole)
	return nil
}

// reportNullFrames logs and counts the frames skipped for a NULL
// int_version that were not reported before, and forgets those of layers
// read whole that are no longer found (fixed, or no longer waiting): one
// line per frame however often it is read, in poll mode too.
func (q *Queue) reportNullFrames(frames []match.Frame, layers []string, whole func(layer string) bool) {
	q.mu.Lock()
	if len(q.nullFrames) > 0 {
		found := make(map[string]bool, len(frames))
		for _, f := range frames {
			found[f.ID] = true
		}
		for id, layer := range q.nullFrames {
			if !found[id] && whole(layer) {
				delete(q.nullFrames, id)
			}
		}
	}
	var report []int
	for i, f := range frames {
		if _, ok := q.nullFrames[f.ID]; !ok {
			q.nullFrames[f.ID] = layers[i]
			report = append(report, i)
		}
	}
	q.mu.Unlock()
	for _, i := range report {
		q.log.Warn("waiting frame skipped: its int_version is NULL, which no booking (Cuebot's or ours) can match; set it to 0 in Cuebot",
			"table", "frame", "reason", SkipNullVersion, "frame", frames[i].ID, "name", frames[i].Name, "layer", layers[i])
		if q.Metrics != nil {
			q.Metrics.RowsSkipped.WithLabelValues("frame", SkipNullVersion).Inc()
		}
	}
}

// Run applies hints until ctx ends (it returns nil then): it re-reads what
// Notify and Requeue asked for, one query per batch of hints, and wakes
// clusters when a queued layer's start-after time comes. A failed read is
// retried with backoff.
func (q *Queue) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var backoff time.Duration
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.kick:
		case <-q.rearm:
		case <-retry:
			retry = nil
		case <-timer.C:
			q.wakeStarted(time.Now())
		}
		if next, ok := q.nextStart(); ok {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		if retry != nil {
			continue
		}
		q.mu.Lock()
		sc := q.pending
		q.pending = newScope()
		q.mu.Unlock()
		if sc.empty() {
			continue
		}
		err := q.refresh(ctx, sc)
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		q.mu.Lock()
		q.pending.merge(sc)
		q.pending.all = q.pending.all || sc.all
		q.mu.Unlock()
		backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		q.log.Warn("reading pending layers failed; retrying", "err", err, "in", backoff)
		retry = time.After(backoff)
	}
}

// nextStart is the earliest start-after time not yet woken.
func (q *Queue) nextStart() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for _, e := range q.layers {
		if !e.started && (next.IsZero() || e.layer.StartAfter.Before(next)) {
			next = e.layer.StartAfter
		}
	}
	return next, !next.IsZero()
}

// wakeStarted wakes the clusters of layers whose start-after time has come.
func (q *Queue) wakeStarted(now time.Time) {
	wake := map[cluster.Key]struct{}{}
	q.mu.Lock()
	for _, e := range q.layers {
		if !e.started && !e.layer.StartAfter.After(now) {
			e.started = true
			for _, k := range e.keys {
				wake[k] = struct{}{}
			}
		}
	}
	q.mu.Unlock()
	q.wake(wake)
}
