// Package sim is `cuesched sim`: a discrete-event simulation of a farm
// (package sim/workload draws it) in simulated time, booked by the loop of
// `cuesched run` itself. The loop's ports are kept in memory (ports.go):
// the host index is package cache's, matching is package match's, and the
// loop's rules (one round per wake, drop back-off, busy retry) are package
// scheduler's, whose rounds the simulation runs one at a time
// (scheduler.Drive) and whose "try again after d" it turns into events d
// later. Frames end, and die of memory, as events; nothing reads the wall
// clock but the report's wall_s.
package sim

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/scheduler"
	"github.com/cuesched/cuesched/sim/workload"
)

// Variant is one set of the loop's settings a workload runs under.
type Variant struct {
	Label string
	// Settings are the KEY=VALUE pairs given, as the report shows them.
	Settings        []string
	Policy          match.Policy // nil: best fit
	Order           match.Order
	SelfishServices []string
	// TagPressure is the host index's pressure fraction (cuesched run's
	// --tag-pressure); 0 turns it off.
	TagPressure float64
	// Locality is cuesched run's --locality (match.Options.Locality).
	Locality bool
	// Memory is memory from history (--memory-from-history,
	// --memory-headroom): a layer's finished frames record what they used.
	Memory match.Memory
	// Reservations and ReservationAfter are --reservations and
	// --reservation-after: a layer's, job's and service's finished frames
	// record how long they ran (match.Runs).
	Reservations     bool
	ReservationAfter time.Duration
}

// Options are what a simulation runs with besides its variants.
type Options struct {
	Seed uint64
	// Scale and JobScale shrink the farm and its work (workload.Draw's);
	// 0: full size.
	Scale, JobScale float64
	// Limit bounds the simulated time: a farm not drained by then stops
	// there (drain_s null). 0: 30 days.
	Limit time.Duration
	// OnStop, when set, is called each time a frame stops running (done,
	// or killed for its memory), in simulated time order: a trace of where
	// the farm's time went (a replay's test checks every frame ran its
	// recorded time, once).
	OnStop func(FrameRun)
}

// FrameRun is one run of a frame in a simulation, from its start to its
// stop.
type FrameRun struct {
	Job    string // workload.Job's ID
	Layer  string // the layer's name in its job
	Frame  int    // the frame's index in its layer, from 0
	Host   string
	Start  time.Duration // simulated time since Start
	Stop   time.Duration
	Killed bool // killed for its memory, to run again
}

// Start is the simulated clock's origin.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Cuebot's memory failure: RQD reports exit status 33 for a frame killed
// for its memory, and Cuebot puts the frame back to WAITING (whatever its
// retries) after raising its layer's memory minimum to what the proc had
// reserved plus 2 GB.
const (
	ExitMemoryFailure = 33
	memoryRaise       = 2 * workload.GB
)

const (
	frameBlocked uint8 = iota // its job not arrived, or its layer waits for another
	frameWaiting
	frameRunning
	frameDone
)

type hostRec struct {
	h       match.Host // Total, tags, ...; Idle and MemFree kept below
	idle    match.Resources
	used    int64 // memory the frames running use (KB)
	running int32
	procs   []int32 // the frames running here
}

type layerRec struct {
	tmpl       match.Layer
	keys       []cluster.Key
	waiting    []int32 // waiting frames in dispatch order
	first, n   int32   // its frames: first .. first+n-1
	left       int32   // frames not done
	dependents []int32
	after      int32 // the layer it waits for, -1 none
	job        int32
	width      uint8
	trimmed    bool   // a frame of it started with less memory than it asks
	service    string // its first service, whose mean run it shares
	runs       runSum
}

// runSum is the finished frames' run times of a layer, job or service
// (Cuebot's layer_usage and job_usage: clock time of successes, their count).
type runSum struct {
	n   int64
	sum time.Duration
}

func (s *runSum) add(d time.Duration) { s.n, s.sum = s.n+1, s.sum+d }

func (s runSum) mean() time.Duration {
	if s.n == 0 {
		return 0
	}
	return s.sum / time.Duration(s.n)
}

type frameRec struct {
	layer    int32
	state    uint8
	version  int32
	started  bool
	host     int32
	readyAt  time.Duration
	startAt  time.Duration
	runtime  time.Duration
	used     int64
	size     match.Resources
	overflow bool // killed for its memory rather than ending
}

// run is one variant's simulation.
type run struct {
	farm      *workload.Farm
	sched     *scheduler.Scheduler
	ix        *cache.Hosts
	q         *queue
	caps      *caps
	hosts     []hostRec
	hostIndex map[string]int32
	layers    []layerRec
	frames    []frameRec
	ids       []string // frameID's
	jobFirst  []int32  // each job's first layer
	jobShow   []int32
	shows     []string
	jobRuns   []runSum
	svcRuns   map[string]*runSum

	t       time.Duration
	events  events
	seq     uint64
	stepped []*scheduler.Stepped // the clusters, in key order
	gens    []uint32             // per stepped cluster: a retry event counts only at its generation
	grown   map[int32]struct{}
	onStop  func(FrameRun)

	m       metrics
	sampler sampler
}

// metrics accumulate what the report says.
type metrics struct {
	waits        [nWidths][]float64 // seconds, ready to first start
	waiting      [nWidths]int64     // frames waiting now
	booked       int64
	warmStarts   int64 // starts on a host warm for the frame's layer
	oomKills     int64
	memTrimmed   int64 // frames started with less memory than their layer asks
	memRestored  int64 // trimmed layers a memory failure stopped trimming
	resvMade     int64 // reservations made
	resvHonoured int64 // frames booked on a host reserved for their layer
	backfills    int64 // frames booked on a host reserved for another layer
	done         int
	running      int64
	runningCores int64
	frameArea    float64 // frame-seconds running
	coreArea     float64 // core-unit-seconds running
	showCoreSec  []float64
	lastArrival  time.Duration
}

func (r *run) now() time.Time { return Start.Add(r.t) }

// frameID is a frame's id as the loop sees it, made once: rounds read the
// same waiting frames again and again.
func (r *run) frameID(fi int32) string {
	if r.ids[fi] == "" {
		r.ids[fi] = strconv.Itoa(int(fi))
	}
	return r.ids[fi]
}

// newRun builds the farm's hosts, caps and the loop for one variant.
func newRun(f *workload.Farm, v Variant) *run {
	r := &run{farm: f, hostIndex: map[string]int32{}, grown: map[int32]struct{}{}, svcRuns: map[string]*runSum{}}
	r.ix = cache.NewHosts(r.now, 0)
	var offered int64
	r.ix.SetPressureFraction(v.TagPressure)
	var allocs []cluster.Alloc
	for _, a := range f.Allocs {
		tag := a.Tag
		if tag == "" {
			tag = a.ID
		}
		ca := cluster.Alloc{ID: a.ID, Facility: a.Facility, Tag: tag}
		allocs = append(allocs, ca)
		r.ix.SetAlloc(ca)
	}
	for i, h := range f.Hosts {
		total := match.Resources{Cores: h.Cores, Mem: h.Mem, GPUs: h.GPUs, GPUMem: h.GPUMem}
		r.hosts = append(r.hosts, hostRec{idle: total, h: match.Host{ID: h.ID, Name: h.ID, Facility: h.Facility,
			Alloc: h.Alloc, OS: "linux", Tags: h.Tags, Total: total, TempFree: 100 * workload.GB,
			TempTotal: 100 * workload.GB}})
		r.hostIndex[h.ID] = int32(i)
		r.ix.SetHost(r.view(int32(i)))
		offered += h.Cores
	}
	r.sampler = newSampler(offered)
	r.caps = &caps{subs: map[subKey]match.Subscription{}, jobs: map[string]match.Cap{}}
	showIndex := map[string]int32{}
	for _, s := range f.Subs {
		r.caps.subs[subKey{s.Show, s.Alloc}] = match.Subscription{Size: s.Size, Burst: s.Burst}
		if _, ok := showIndex[s.Show]; !ok {
			showIndex[s.Show] = int32(len(r.shows))
			r.shows = append(r.shows, s.Show)
		}
	}
	r.m.showCoreSec = make([]float64, len(r.shows))
	r.frames = make([]frameRec, 0, f.Frames)
	keyer := cluster.NewKeyer(allocs, buckets)
	for ji, j := range f.Jobs {
		jobID := j.ID
		if j.MaxCores > 0 {
			r.caps.jobs[jobID] = match.Cap{MaxCores: j.MaxCores, MaxGPUs: match.NoMax}
		}
		r.jobFirst = append(r.jobFirst, int32(len(r.layers)))
		r.jobShow = append(r.jobShow, showIndex[j.Show])
		r.jobRuns = append(r.jobRuns, runSum{})
		r.m.lastArrival = max(r.m.lastArrival, j.Arrive)
		facility := j.Facility
		if facility == "" {
			facility = f.Hosts[0].Facility
		}
		for _, l := range j.Layers {
			idx := int32(len(r.layers))
			tags := slices.Clone(l.Tags)
			lr := layerRec{job: int32(ji), first: int32(len(r.frames)), n: int32(len(l.Frames)),
				left: int32(len(l.Frames)), after: -1, width: widthOf(l.Cores),
				keys: keyer.OfLayer(facility, tags),
				tmpl: match.Layer{ID: layerID(idx), Name: fmt.Sprintf("%s/%s", j.ID, l.Name), JobID: jobID,
					JobName: jobID, ShowID: j.Show, ShowName: j.Show, FolderID: j.Show, DeptID: "dept",
					Facility: facility, Priority: j.Priority, Tags: tags,
					Min:        match.Resources{Cores: l.Cores, Mem: l.Mem, GPUs: l.GPUs, GPUMem: l.GPUMem},
					Threadable: l.Threadable, Services: l.Services}}
			// Cuebot's service for a layer naming none is "default".
			lr.service = "default"
			if len(l.Services) > 0 {
				lr.service = l.Services[0]
			}
			if r.svcRuns[lr.service] == nil {
				r.svcRuns[lr.service] = &runSum{}
			}
			if l.After >= 0 {
				lr.after = r.jobFirst[ji] + int32(l.After)
				r.layers[lr.after].dependents = append(r.layers[lr.after].dependents, idx)
			}
			r.layers = append(r.layers, lr)
			for _, fr := range l.Frames {
				r.frames = append(r.frames, frameRec{layer: idx, runtime: fr.Runtime, used: fr.Used, host: -1})
			}
		}
	}
	r.ids = make([]string, len(r.frames))
	r.q = &queue{r: r, byKey: map[cluster.Key]map[int32]struct{}{}, applied: make(chan struct{})}
	r.sched = scheduler.New(scheduler.Config{
		Policy: v.Policy, Order: v.Order, SelfishServices: v.SelfishServices, Locality: v.Locality, Memory: v.Memory,
		Reservations: v.Reservations, ReservationAfter: v.ReservationAfter,
		OnReserved: func(made []match.Reservation) { r.m.resvMade += int64(len(made)) },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:        r.now, Clock: r.now, Workers: 1,
	}, scheduler.Deps{Queue: r.q, Hosts: r.ix, Caps: r.caps, Booker: booker{r}, Owner: &owner{changes: make(chan struct{})},
		Running: running{r}, Buckets: buckets})
	return r
}

// buckets is the tag bucket count of a deployment (cuesched.setting's
// default).
const buckets = 16

// view is a host as the replica would offer it: its host row's idle
// capacity, and the free memory RQD reports (what its frames do not use).
func (r *run) view(hi int32) match.Host {
	h := &r.hosts[hi]
	v := h.h
	v.Idle = h.idle
	v.MemFree = max(0, h.h.Total.Mem-h.used)
	return v
}

// simulate runs the farm to drain or the limit.
func (r *run) simulate(limit time.Duration) {
	for ji, j := range r.farm.Jobs {
		r.push(event{at: j.Arrive, kind: evArrive, i: int32(ji)})
	}
	stepped := r.sched.Drive(context.Background())
	r.stepped = stepped
	r.gens = make([]uint32, len(stepped))
	for {
		r.q.apply()
		r.rounds(stepped)
		if r.m.done == len(r.frames) || len(r.events) == 0 || r.events[0].at > limit {
			return
		}
		r.advance(r.events[0].at)
		for len(r.events) > 0 && r.events[0].at == r.t {
			e := heap.Pop(&r.events).(event)
			r.handle(e, stepped)
		}
		r.hostsGrown()
	}
}

// rounds runs the rounds the clusters were woken for, in key order, until
// none is: a round that placed frames wakes its cluster again, as in the
// loop.
func (r *run) rounds(stepped []*scheduler.Stepped) {
	scheduler.Settle(stepped, r.retryAfter, func() {
		r.hostsGrown()
		r.q.apply()
	})
}

// retryAfter notes that cluster ci ran a round: the retry due before is
// cancelled, and the one it asks for (d > 0) is an event.
func (r *run) retryAfter(ci int, d time.Duration) {
	r.gens[ci]++
	if d > 0 {
		r.push(event{at: r.t + d, kind: evRetry, i: int32(ci), gen: r.gens[ci]})
	}
}

// advance moves the clock to t, integrating what ran meanwhile.
func (r *run) advance(t time.Duration) {
	dt := (t - r.t).Seconds()
	r.m.frameArea += float64(r.m.running) * dt
	r.m.coreArea += float64(r.m.runningCores) * dt
	r.sampler.advance(r.t, t, r.m.runningCores, &r.m.waiting)
	r.t = t
}

func (r *run) handle(e event, stepped []*scheduler.Stepped) {
	switch e.kind {
	case evArrive:
		first := r.jobFirst[e.i]
		for li := first; li < first+int32(len(r.farm.Jobs[e.i].Layers)); li++ {
			if r.layers[li].after < 0 {
				r.ready(li)
			}
		}
	case evEnd:
		r.stop(e.i, false)
	case evKill:
		r.stop(e.i, true)
	case evRetry:
		if e.gen == r.gens[e.i] {
			r.retryAfter(int(e.i), stepped[e.i].Due())
		}
	}
}

// ready makes a layer's frames WAITING and queues it.
func (r *run) ready(li int32) {
	l := &r.layers[li]
	for fi := l.first; fi < l.first+l.n; fi++ {
		f := &r.frames[fi]
		f.state, f.readyAt = frameWaiting, r.t
		l.waiting = append(l.waiting, fi)
	}
	r.m.waiting[l.width] += int64(l.n)
	r.q.add(li)
}

// start books frame fi on host h (the booker's commit): the frame runs
// until its end, or until it is killed for its memory when what it uses
// is more than its host had left.
func (r *run) start(fi int32, h *hostRec, p match.Placement) {
	f := &r.frames[fi]
	l := &r.layers[f.layer]
	hi := r.hostIndex[h.h.ID]
	f.state, f.host, f.size, f.startAt = frameRunning, hi, p.Size, r.t
	f.version++
	if !f.started {
		f.started = true
		r.m.waits[l.width] = append(r.m.waits[l.width], (r.t - f.readyAt).Seconds())
	}
	r.m.booked++
	switch p.Use {
	case match.UseHonoured:
		r.m.resvHonoured++
	case match.UseBackfill:
		r.m.backfills++
	}
	if p.Size.Mem < l.tmpl.Min.Mem {
		r.m.memTrimmed++
		l.trimmed = true
	}
	r.m.waiting[l.width]--
	if i := slices.Index(l.waiting, fi); i >= 0 {
		l.waiting = slices.Delete(l.waiting, i, i+1)
	}
	left := h.h.Total.Mem - h.used
	h.idle = h.idle.Sub(p.Size)
	h.used += f.used
	h.running++
	h.procs = append(h.procs, fi)
	r.caps.count(l.tmpl.ShowID, h.h.Alloc, l.tmpl.JobID, p.Size, 1)
	r.m.running++
	r.m.runningCores += p.Size.Cores
	f.overflow = f.used > left
	// A host not warm for the layer (as the index remembers, whatever the
	// variant's locality) first sets the frame up: its runtime grows by the
	// layer's setup time.
	var setup time.Duration
	if ih, _ := r.ix.Host(h.h.ID); r.warm(&ih, &l.tmpl) {
		r.m.warmStarts++
	} else {
		setup = r.farm.Jobs[l.job].Layers[f.layer-r.jobFirst[l.job]].Setup
	}
	if f.overflow {
		// Its use grows to what the host cannot give half-way through.
		r.push(event{at: r.t + setup + f.runtime/2, kind: evKill, i: fi})
	} else {
		r.push(event{at: r.t + setup + f.runtime, kind: evEnd, i: fi})
	}
	r.ix.ProcBooked(h.h.ID, l.tmpl.ID, l.tmpl.JobID)
	// The booking's echo: the host's rows as the stream brings them back,
	// and the capacity matching checked out given back.
	r.ix.SetHost(r.view(hi))
	r.ix.Return(h.h.ID, p.Size)
}

// stop ends a running frame: done, or killed for its memory and WAITING
// again as Cuebot retries it.
func (r *run) stop(fi int32, killed bool) {
	f := &r.frames[fi]
	l := &r.layers[f.layer]
	h := &r.hosts[f.host]
	h.idle = h.idle.Add(f.size)
	h.used -= f.used
	h.running--
	if i := slices.Index(h.procs, fi); i >= 0 {
		h.procs = slices.Delete(h.procs, i, i+1)
	}
	r.caps.count(l.tmpl.ShowID, h.h.Alloc, l.tmpl.JobID, f.size, -1)
	r.m.running--
	r.m.runningCores -= f.size.Cores
	r.m.showCoreSec[r.jobShow[l.job]] += float64(f.size.Cores) / 100 * (r.t - f.startAt).Seconds()
	r.ix.SetHost(r.view(f.host))
	r.ix.ProcReleased(h.h.ID, l.tmpl.ID, l.tmpl.JobID)
	r.grown[f.host] = struct{}{}
	if r.onStop != nil {
		j := &r.farm.Jobs[l.job]
		r.onStop(FrameRun{Job: j.ID, Layer: j.Layers[f.layer-r.jobFirst[l.job]].Name, Frame: int(fi - l.first),
			Host: h.h.ID, Start: f.startAt, Stop: r.t, Killed: killed})
	}
	f.host = -1
	// What the frame used is its layer's history (layer_mem.int_max_rss
	// keeps the most any frame of the layer used, killed ones too).
	hist := &l.tmpl.History
	hist.MaxRSS = max(hist.MaxRSS, f.used)
	if killed {
		r.m.oomKills++
		// A memory failure: the layer is no longer trimmed, and Cuebot's
		// raise applies to its full request.
		if l.trimmed && !hist.MemFailed {
			r.m.memRestored++
		}
		hist.MemFailed = true
		l.tmpl.Min.Mem = max(l.tmpl.Min.Mem, f.size.Mem+memoryRaise)
		f.state = frameWaiting
		r.m.waiting[l.width]++
		i, _ := slices.BinarySearch(l.waiting, fi)
		l.waiting = slices.Insert(l.waiting, i, fi)
		r.q.Requeue(l.tmpl.ID)
		return
	}
	f.state = frameDone
	r.m.done++
	hist.Finished++
	ran := r.t - f.startAt
	l.runs.add(ran)
	r.jobRuns[l.job].add(ran)
	r.svcRuns[l.service].add(ran)
	if l.left--; l.left == 0 {
		for _, d := range l.dependents {
			r.ready(d)
		}
	}
}

// runs are the mean run times a layer's expected run is drawn from, as
// the queue reads them from Cuebot's usage tables.
func (r *run) runs(li int32) match.Runs {
	l := &r.layers[li]
	return match.Runs{Layer: l.runs.mean(), Job: r.jobRuns[l.job].mean(), Service: r.svcRuns[l.service].mean()}
}

// warm reports whether the index remembers a frame of the layer, or of its
// job, on h within match.WarmWindow: the caches and files a frame of the
// job fetched serve its next ones.
func (r *run) warm(h *match.Host, l *match.Layer) bool {
	w, _ := match.WarmthOf(h, l.ID, l.JobID, r.now())
	return w != match.Cold
}

// hostsGrown tells the loop of the hosts whose capacity grew, as the
// replica does after applying releases.
func (r *run) hostsGrown() {
	if len(r.grown) == 0 {
		return
	}
	ids := make([]int32, 0, len(r.grown))
	for hi := range r.grown {
		ids = append(ids, hi)
	}
	clear(r.grown)
	slices.Sort(ids)
	hs := make([]match.Host, len(ids))
	for i, hi := range ids {
		hs[i] = r.view(hi)
	}
	r.sched.HostsChanged(hs, false)
}

func (r *run) push(e event) {
	r.seq++
	e.seq = r.seq
	heap.Push(&r.events, e)
}

const (
	evArrive uint8 = iota
	evEnd
	evKill
	evRetry
)

type event struct {
	at   time.Duration
	seq  uint64
	i    int32
	gen  uint32
	kind uint8
}

// events is a min-heap by (time, order pushed): ties go in push order, so
// a run is deterministic.
type events []event

func (h events) Len() int { return len(h) }
func (h events) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h events) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)   { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
