package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/internal/metrics"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

var quiet = slog.New(slog.DiscardHandler)

// seeded is a test database holding a farm.
type seeded struct {
	*pgtest.DB
	s *seed.Seeded
}

func loadFarm(t testing.TB, f *seed.Farm) *seeded {
	t.Helper()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := seed.Load(ctx, db.Pool, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &seeded{DB: db, s: s}
}

// smallFarm is one managed show on one allocation (tag "gen") of n hosts of
// the given cores (in core units) and 64 GB, with jobs of layers of frames
// asking cores each.
func smallFarm(hosts int, hostCores int64, jobs, layers, frames int, cores int64) *seed.Farm {
	f := &seed.Farm{Allocations: []seed.Allocation{{Name: "local.gen", Tag: "gen"}}}
	for i := range hosts {
		f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: "local.gen", Cores: hostCores, Mem: 64 * seed.GB})
	}
	f.Shows = []seed.Show{{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
		{Alloc: "local.gen", Size: 1_000_000, Burst: 1_000_000}}}}
	for j := range jobs {
		job := seed.Job{Name: fmt.Sprintf("job%02d", j), Show: "film", Priority: int64(10 + j)}
		for l := range layers {
			job.Layers = append(job.Layers, seed.Layer{Name: fmt.Sprintf("l%d", l), Frames: frames, Cores: cores,
				Mem: seed.GB, Threadable: true, Tags: "gen", Cmd: "render -f #IFRAME# -l #LAYER#"})
		}
		f.Jobs = append(f.Jobs, job)
	}
	return f
}

// view is the farm as a matcher would see it: bookable hosts and the
// WAITING frames of pending layers, read from the database.
type view struct {
	hosts  []match.Host // by name
	layers []*match.Layer
}

func readView(ctx context.Context, t testing.TB, pool *pgxpool.Pool) view {
	t.Helper()
	v, err := loadView(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func loadView(ctx context.Context, pool *pgxpool.Pool) (view, error) {
	var v view
	rows, err := pool.Query(ctx, `
		SELECT h.pk_host, h.str_name, a.pk_facility, h.pk_alloc, hs.str_os, h.int_thread_mode,
		       array_agg(lower(t.str_tag) ORDER BY lower(t.str_tag)),
		       h.int_cores, h.int_mem, h.int_gpus, h.int_gpu_mem,
		       h.int_cores_idle, h.int_mem_idle, h.int_gpus_idle, h.int_gpu_mem_idle
		  FROM host h JOIN alloc a ON a.pk_alloc = h.pk_alloc JOIN host_stat hs ON hs.pk_host = h.pk_host
		  JOIN host_tag t ON t.pk_host = h.pk_host
		 WHERE h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'
		 GROUP BY h.pk_host, a.pk_facility, hs.str_os
		 ORDER BY h.str_name`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var h match.Host
		var mode int
		if err := rows.Scan(&h.ID, &h.Name, &h.Facility, &h.Alloc, &h.OS, &mode, &h.Tags,
			&h.Total.Cores, &h.Total.Mem, &h.Total.GPUs, &h.Total.GPUMem,
			&h.Idle.Cores, &h.Idle.Mem, &h.Idle.GPUs, &h.Idle.GPUMem); err != nil {
			return v, err
		}
		h.ThreadMode = match.ThreadMode(mode)
		v.hosts = append(v.hosts, h)
	}
	if err := rows.Err(); err != nil {
		return v, err
	}
	byID := map[string]*match.Layer{}
	rows, err = pool.Query(ctx, `
		SELECT l.pk_layer, l.str_name, j.pk_job, j.str_name, j.pk_show, j.pk_folder, j.pk_dept, j.pk_facility,
		       l.str_tags, l.int_cores_min, l.int_mem_min, l.int_gpus_min, l.int_gpu_mem_min, l.b_threadable,
		       jr.int_priority
		  FROM layer l JOIN job j ON j.pk_job = l.pk_job JOIN job_resource jr ON jr.pk_job = j.pk_job
		 WHERE j.str_state = 'PENDING'
		 ORDER BY jr.int_priority DESC, j.str_name, l.int_dispatch_order`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		l := &match.Layer{}
		var tags string
		if err := rows.Scan(&l.ID, &l.Name, &l.JobID, &l.JobName, &l.ShowID, &l.FolderID, &l.DeptID, &l.Facility,
			&tags, &l.Min.Cores, &l.Min.Mem, &l.Min.GPUs, &l.Min.GPUMem, &l.Threadable, &l.Priority); err != nil {
			return v, err
		}
		for _, tag := range strings.Split(tags, "|") {
			l.Tags = append(l.Tags, strings.ToLower(strings.TrimSpace(tag)))
		}
		byID[l.ID] = l
		v.layers = append(v.layers, l)
	}
	if err := rows.Err(); err != nil {
		return v, err
	}
	rows, err = pool.Query(ctx, `SELECT pk_frame, pk_layer, str_name, int_version, int_number FROM frame
		WHERE str_state = 'WAITING' ORDER BY pk_layer, int_dispatch_order`)
	if err != nil {
		return v, err
	}
	for rows.Next() {
		var f match.Frame
		var layer string
		if err := rows.Scan(&f.ID, &layer, &f.Name, &f.Version, &f.Number); err != nil {
			return v, err
		}
		if l := byID[layer]; l != nil {
			l.Frames = append(l.Frames, f)
		}
	}
	if err := rows.Err(); err != nil {
		return v, err
	}
	return v, nil
}

// tagged is the part of the view a cluster of one tag sees.
func (v view) tagged(tag string) view {
	var out view
	for _, h := range v.hosts {
		if slices.Contains(h.Tags, tag) {
			out.hosts = append(out.hosts, h)
		}
	}
	for _, l := range v.layers {
		if slices.Contains(l.Tags, tag) {
			out.layers = append(out.layers, l)
		}
	}
	return out
}

// firstFit places every waiting frame on the first host (in hostOrder)
// carrying one of its layer's tags with room for the layer's minimums: the
// simple in-test placer the brief allows until the matcher is joined.
func firstFit(v view, hostOrder []int) []match.Placement {
	idle := make([]match.Resources, len(v.hosts))
	for i, h := range v.hosts {
		idle[i] = h.Idle
	}
	if hostOrder == nil {
		hostOrder = make([]int, len(v.hosts))
		for i := range hostOrder {
			hostOrder[i] = i
		}
	}
	var out []match.Placement
	for _, l := range v.layers {
		size := l.Min
		for _, f := range l.Frames {
			for _, i := range hostOrder {
				h := v.hosts[i]
				if !idle[i].Covers(size) || !carriesAny(h.Tags, l.Tags) {
					continue
				}
				idle[i] = idle[i].Sub(size)
				out = append(out, match.Placement{Layer: l, Frame: f, Host: h, Size: size})
				break
			}
		}
	}
	return out
}

func carriesAny(hostTags, layerTags []string) bool {
	for _, t := range layerTags {
		if slices.Contains(hostTags, t) {
			return true
		}
	}
	return false
}

// byTag splits placements into clusters by their layer's first tag, each
// tag its own cluster number (in tag order), as the loop will split them.
func byTag(ps []match.Placement) (ids []int32, batches map[int32][]match.Placement) {
	tags := map[string]bool{}
	for _, p := range ps {
		tags[p.Layer.Tags[0]] = true
	}
	names := make([]string, 0, len(tags))
	for t := range tags {
		names = append(names, t)
	}
	sort.Strings(names)
	batches = map[int32][]match.Placement{}
	for _, p := range ps {
		id := int32(sort.SearchStrings(names, p.Layer.Tags[0]) + 1)
		batches[id] = append(batches[id], p)
	}
	for id := range batches {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, batches
}

type testBooker struct {
	*Booker
	reg   *prometheus.Registry
	sched *metrics.Scheduler
	m     *Metrics
}

func newTestBooker(pool *pgxpool.Pool, cfg BookerConfig) *testBooker {
	reg := prometheus.NewRegistry()
	tb := &testBooker{reg: reg, sched: metrics.NewScheduler(reg), m: cfg.Metrics}
	if tb.m == nil {
		tb.m = NewMetrics(reg)
	}
	cfg.Pool, cfg.Metrics, cfg.Scheduler, cfg.Logger = pool, tb.m, tb.sched, quiet
	tb.Booker = NewBooker(cfg)
	return tb
}

// settledLog collects a launcher's outcomes and lets a test wait for them.
type settledLog struct {
	mu      sync.Mutex
	all     []Settled
	changed chan struct{}
}

func newSettledLog() *settledLog { return &settledLog{changed: make(chan struct{})} }

func (s *settledLog) add(e Settled) {
	s.mu.Lock()
	s.all = append(s.all, e)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// wait returns the outcomes once there are at least n.
func (s *settledLog) wait(ctx context.Context, t testing.TB, n int) []Settled {
	t.Helper()
	for {
		s.mu.Lock()
		all, ch := slices.Clone(s.all), s.changed
		s.mu.Unlock()
		if len(all) >= n {
			return all
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%d of %d bookings settled: %v", len(all), n, ctx.Err())
		}
	}
}

// rqdFarm starts a fake RQD on every host name at one port chosen for all.
func rqdFarm(t testing.TB, names []string, opts fakerqd.Options) (*fakerqd.Farm, int) {
	t.Helper()
	var lastErr error
	for range 20 {
		port := 20000 + rand.IntN(40000)
		addrs := make([]string, len(names))
		for i, n := range names {
			addrs[i] = fmt.Sprintf("%s:%d", n, port)
		}
		farm, err := fakerqd.StartFarm(addrs, opts)
		if err == nil {
			t.Cleanup(farm.Close)
			return farm, port
		}
		lastErr = err
	}
	t.Fatalf("start fake RQD farm: %v", lastErr)
	return nil, 0
}

// runLauncher starts a launcher on the pool and stops it when the test ends.
func runLauncher(t testing.TB, cfg LauncherConfig) *Launcher {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	l := NewLauncher(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("launcher: %v", err)
		}
	})
	return l
}

func newRQD(t testing.TB, port int, callTimeout time.Duration) *RQDClient {
	t.Helper()
	c := NewRQDClient(RQDConfig{Port: port, CallTimeout: callTimeout, Logger: quiet})
	t.Cleanup(c.Close)
	return c
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func histogramCount(t testing.TB, h prometheus.Metric) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
