// Package booktest holds what the tests of booking and launching share: a
// farm seeded into a fresh database, the farm as a matcher sees it read back
// from that database, and a first-fit placer standing in for the matcher.
package booktest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// Seeded is a test database holding a farm.
type Seeded struct {
	*pgtest.DB
	Seeded *seed.Seeded
}

// LoadFarm seeds f into a fresh database of the test's cluster.
func LoadFarm(t testing.TB, f *seed.Farm) *Seeded {
	t.Helper()
	db := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := seed.Load(ctx, db.Pool, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &Seeded{DB: db, Seeded: s}
}

// SmallFarm is one managed show on one allocation (tag "gen") of n hosts of
// the given cores (in core units) and 64 GB, with jobs of layers of frames
// asking cores each.
func SmallFarm(hosts int, hostCores int64, jobs, layers, frames int, cores int64) *seed.Farm {
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

// View is the farm as a matcher would see it: bookable hosts and the
// WAITING frames of pending layers, read from the database.
type View struct {
	Hosts  []match.Host // by name
	Layers []*match.Layer
}

// ReadView is LoadView failing the test on an error.
func ReadView(ctx context.Context, t testing.TB, pool *pgxpool.Pool) View {
	t.Helper()
	v, err := LoadView(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// LoadView reads the View of the farm in pool.
func LoadView(ctx context.Context, pool *pgxpool.Pool) (View, error) {
	var v View
	var err error
	if v.Hosts, err = loadHosts(ctx, pool); err != nil {
		return v, err
	}
	if v.Layers, err = loadLayers(ctx, pool); err != nil {
		return v, err
	}
	return v, nil
}

func loadHosts(ctx context.Context, pool *pgxpool.Pool) ([]match.Host, error) {
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
		return nil, err
	}
	var hosts []match.Host
	for rows.Next() {
		var h match.Host
		var mode int
		if err := rows.Scan(&h.ID, &h.Name, &h.Facility, &h.Alloc, &h.OS, &mode, &h.Tags,
			&h.Total.Cores, &h.Total.Mem, &h.Total.GPUs, &h.Total.GPUMem,
			&h.Idle.Cores, &h.Idle.Mem, &h.Idle.GPUs, &h.Idle.GPUMem); err != nil {
			return nil, err
		}
		h.ThreadMode = match.ThreadMode(mode)
		hosts = append(hosts, h)
	}
	return hosts, rows.Err()
}

func loadLayers(ctx context.Context, pool *pgxpool.Pool) ([]*match.Layer, error) {
	var layers []*match.Layer
	byID := map[string]*match.Layer{}
	rows, err := pool.Query(ctx, `
		SELECT l.pk_layer, l.str_name, j.pk_job, j.str_name, j.pk_show, j.pk_folder, j.pk_dept, j.pk_facility,
		       l.str_tags, l.int_cores_min, l.int_mem_min, l.int_gpus_min, l.int_gpu_mem_min, l.b_threadable,
		       jr.int_priority
		  FROM layer l JOIN job j ON j.pk_job = l.pk_job JOIN job_resource jr ON jr.pk_job = j.pk_job
		 WHERE j.str_state = 'PENDING'
		 ORDER BY jr.int_priority DESC, j.str_name, l.int_dispatch_order`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		l := &match.Layer{}
		var tags string
		if err := rows.Scan(&l.ID, &l.Name, &l.JobID, &l.JobName, &l.ShowID, &l.FolderID, &l.DeptID, &l.Facility,
			&tags, &l.Min.Cores, &l.Min.Mem, &l.Min.GPUs, &l.Min.GPUMem, &l.Threadable, &l.Priority); err != nil {
			return nil, err
		}
		for _, tag := range strings.Split(tags, "|") {
			l.Tags = append(l.Tags, strings.ToLower(strings.TrimSpace(tag)))
		}
		byID[l.ID] = l
		layers = append(layers, l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = pool.Query(ctx, `SELECT pk_frame, pk_layer, str_name, int_version, int_number FROM frame
		WHERE str_state = 'WAITING' ORDER BY pk_layer, int_dispatch_order`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var f match.Frame
		var layer string
		if err := rows.Scan(&f.ID, &layer, &f.Name, &f.Version, &f.Number); err != nil {
			return nil, err
		}
		if l := byID[layer]; l != nil {
			l.Frames = append(l.Frames, f)
		}
	}
	return layers, rows.Err()
}

// Tagged is the part of the view a cluster of one tag sees.
func (v View) Tagged(tag string) View {
	var out View
	for _, h := range v.Hosts {
		if slices.Contains(h.Tags, tag) {
			out.Hosts = append(out.Hosts, h)
		}
	}
	for _, l := range v.Layers {
		if slices.Contains(l.Tags, tag) {
			out.Layers = append(out.Layers, l)
		}
	}
	return out
}

// FirstFit places every waiting frame on the first host (in hostOrder; nil:
// the view's order) carrying one of its layer's tags with room for the
// layer's minimums: a simple placer standing in for the matcher.
func FirstFit(v View, hostOrder []int) []match.Placement {
	idle := make([]match.Resources, len(v.Hosts))
	for i, h := range v.Hosts {
		idle[i] = h.Idle
	}
	if hostOrder == nil {
		hostOrder = make([]int, len(v.Hosts))
		for i := range hostOrder {
			hostOrder[i] = i
		}
	}
	var out []match.Placement
	for _, l := range v.Layers {
		size := l.Min
		for _, f := range l.Frames {
			for _, i := range hostOrder {
				h := v.Hosts[i]
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

// ByTag splits placements into clusters by their layer's first tag, each
// tag its own cluster number (in tag order), as the loop splits them.
func ByTag(ps []match.Placement) (ids []int32, batches map[int32][]match.Placement) {
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
