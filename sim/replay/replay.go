// Package replay reads a Cuebot database's history into a farm the
// simulator runs (`cuesched sim --from-db`): the hosts and allocations as
// they are now, the subscriptions of the shows whose jobs it replays, and
// every job that arrived within a window (job_history) with its layers
// (layer_history) and the frames it ran (frame_history), each frame keeping
// the duration and memory use recorded for it. History keeps no
// dependencies, so every frame is ready when its job arrives. It only reads,
// in one REPEATABLE READ READ ONLY transaction.
package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/queue"
	"github.com/cuesched/cuesched/sim/workload"
)

// Tables are the tables (on the search_path) a replay reads: its role needs
// SELECT on each.
var Tables = []string{"alloc", "facility", "host", "host_tag", "show", "subscription", "layer",
	"job_history", "layer_history", "frame_history"}

// ErrEmpty is the error of a window holding no frame to replay.
var ErrEmpty = errors.New("nothing to replay")

// memoryFailure is the exit status RQD reports for a frame killed for its
// memory (sim.ExitMemoryFailure).
const memoryFailure = 33

// Options say what to replay.
type Options struct {
	// Since is the window: the jobs whose job_history.int_ts_started is at
	// most Since before the database's clock.
	Since time.Duration
	// StatementTimeout bounds each statement; 0: 5 minutes.
	StatementTimeout time.Duration
}

// History is a replayed farm and what of the history it holds.
type History struct {
	Farm *workload.Farm
	// From and To are the window (To is the database's clock); First is the
	// first replayed job's arrival, the simulation's time 0.
	From, To, First time.Time
	Jobs, Layers    int
	// Attempts are the finished runs recorded for the replayed frames (a
	// frame retried ran more than once), MemoryKills those of them that
	// ended with Cuebot's memory-failure exit status: what the simulation's
	// frames_booked and oom_kills compare with.
	Attempts, MemoryKills int
	// Running are frames left out because no run of theirs has ended;
	// Untagged the frames of layers left out because they have neither a
	// live layer's tags nor a recorded allocation to take tags from.
	Running, Untagged int
}

// Beginner begins a transaction: a pool or a connection.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// Read replays the history of db within opt.Since of now.
func Read(ctx context.Context, db Beginner, opt Options) (*History, error) {
	if opt.Since <= 0 {
		return nil, fmt.Errorf("replay window %v: want a positive duration", opt.Since)
	}
	if opt.StatementTimeout <= 0 {
		opt.StatementTimeout = 5 * time.Minute
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin read-only transaction: %w", err)
	}
	// Read-only: nothing to commit, and a rollback ends it just as well.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var now int64
	if err := tx.QueryRow(ctx, `SELECT extract(epoch FROM now())::bigint,
		set_config('statement_timeout', $1, true)`, strconv.FormatInt(opt.StatementTimeout.Milliseconds(), 10)).
		Scan(&now, new(string)); err != nil {
		return nil, fmt.Errorf("read the database's clock: %w", err)
	}
	r := &reader{tx: tx, from: now - int64(opt.Since/time.Second)}
	h := &History{From: time.Unix(r.from, 0).UTC(), To: time.Unix(now, 0).UTC()}
	for _, step := range []func(context.Context) error{r.allocs, r.hosts, r.jobs, r.layers, r.frames, r.subs} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	if len(r.hostList) == 0 {
		return nil, fmt.Errorf("%w: table host holds no host (a replay runs the history on the farm's hosts as they are now)", ErrEmpty)
	}
	h.Farm = r.farm(h)
	if h.Farm.Frames == 0 {
		return nil, fmt.Errorf("%w: no job that arrived since %s (job_history.int_ts_started) has a frame that ran to its end "+
			"(frame_history): a longer window may hold some, unless Cuebot keeps no history (config DISABLE_HISTORY)",
			ErrEmpty, h.From.Format(time.RFC3339))
	}
	return h, nil
}

// reader holds the rows read, by key.
type reader struct {
	tx       pgx.Tx
	from     int64 // epoch seconds
	allocOf  map[string]workload.Alloc
	allocPKs []string // in name order
	hostList []workload.Host
	jobList  []*job
	jobOf    map[string]*job
	layerOf  map[string]*layer
	subList  []workload.Sub
}

type job struct {
	name, show, facility string
	arrive               int64
	layers               []*layer
}

type layer struct {
	name                     string
	cores, mem, gpus, gpuMem int64
	services                 string
	liveTags                 *string // layer.str_tags while the layer exists
	liveThreadable           *bool
	frames                   []*frame
}

// firstRun is when a frame of l first started; the end of time when none
// did.
func (l *layer) firstRun() int64 {
	first := int64(math.MaxInt64)
	for _, fr := range l.frames {
		first = min(first, fr.first)
	}
	return first
}

type frame struct {
	name          string
	first         int64 // its first run's start
	started       int64 // its last finished run's
	stopped       int64
	cores, memMax int64
	alloc         string
	runs, kills   int // finished runs; of them, killed for memory
}

func (r *reader) query(ctx context.Context, what, sql string, dest []any, each func() error, args ...any) error {
	rows, err := r.tx.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if _, err := pgx.ForEachRow(rows, dest, each); err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return nil
}

func (r *reader) allocs(ctx context.Context) error {
	r.allocOf = map[string]workload.Alloc{}
	var pk string
	var a workload.Alloc
	return r.query(ctx, "allocations", `SELECT a.pk_alloc, a.str_name, coalesce(a.str_tag, ''), fa.str_name
		  FROM alloc a JOIN facility fa ON fa.pk_facility = a.pk_facility ORDER BY a.str_name`,
		[]any{&pk, &a.ID, &a.Tag, &a.Facility}, func() error {
			a.Tag = cluster.Normalize(a.Tag)
			r.allocOf[pk] = a
			r.allocPKs = append(r.allocPKs, pk)
			return nil
		})
}

// hosts reads every host as its rows are now, whatever its state: a host
// down today ran last week. Its tags are its host_tag rows' words, as the
// host cache reads them.
func (r *reader) hosts(ctx context.Context) error {
	tags := map[string][]string{}
	var pk, tag string
	if err := r.query(ctx, "host tags", `SELECT pk_host, str_tag FROM host_tag`, []any{&pk, &tag}, func() error {
		tags[pk] = append(tags[pk], strings.Fields(cluster.Normalize(tag))...)
		return nil
	}); err != nil {
		return err
	}
	var h workload.Host
	var alloc string
	return r.query(ctx, "hosts", `SELECT pk_host, str_name, pk_alloc, int_cores, int_mem, int_gpus, int_gpu_mem
		  FROM host ORDER BY str_name`,
		[]any{&pk, &h.ID, &alloc, &h.Cores, &h.Mem, &h.GPUs, &h.GPUMem}, func() error {
			a := r.allocOf[alloc]
			h.Alloc, h.Facility = a.ID, a.Facility
			ts := slices.Clone(tags[pk])
			slices.Sort(ts)
			h.Tags = slices.Compact(ts)
			r.hostList = append(r.hostList, h)
			return nil
		})
}

func (r *reader) jobs(ctx context.Context) error {
	r.jobOf = map[string]*job{}
	var pk string
	var j job
	return r.query(ctx, "jobs (job_history)", `SELECT j.pk_job, j.str_name, s.str_name, fa.str_name, j.int_ts_started
		  FROM job_history j
		  JOIN show s ON s.pk_show = j.pk_show
		  JOIN facility fa ON fa.pk_facility = j.pk_facility
		 WHERE j.int_ts_started >= $1
		 ORDER BY j.int_ts_started, j.str_name, j.pk_job`,
		[]any{&pk, &j.name, &j.show, &j.facility, &j.arrive}, func() error {
			c := j
			r.jobOf[pk] = &c
			r.jobList = append(r.jobList, &c)
			return nil
		}, r.from)
}

func (r *reader) layers(ctx context.Context) error {
	r.layerOf = map[string]*layer{}
	var pkJob, pk string
	var l layer
	return r.query(ctx, "layers (layer_history)", `SELECT lh.pk_job, lh.pk_layer, lh.str_name, lh.int_cores_min,
		       lh.int_mem_min, lh.int_gpus_min, lh.int_gpu_mem_min, coalesce(lh.str_services, ''), l.str_tags,
		       l.b_threadable
		  FROM layer_history lh
		  JOIN job_history j ON j.pk_job = lh.pk_job
		  LEFT JOIN layer l ON l.pk_layer = lh.pk_layer
		 WHERE j.int_ts_started >= $1`,
		[]any{&pkJob, &pk, &l.name, &l.cores, &l.mem, &l.gpus, &l.gpuMem, &l.services, &l.liveTags, &l.liveThreadable},
		func() error {
			j := r.jobOf[pkJob]
			if j == nil {
				return nil
			}
			c := l
			r.layerOf[pk] = &c
			j.layers = append(j.layers, &c)
			return nil
		}, r.from)
}

// frames reads every run of the jobs' frames; a frame replays its last
// finished run (the one that succeeded, or the last failure of a frame
// that died): how long it ran and the most memory it used.
func (r *reader) frames(ctx context.Context) error {
	var layerPK, framePK, name, alloc string
	var cores, memMax, exit, started, stopped int64
	var cur *frame
	var curPK string
	return r.query(ctx, "frames (frame_history)", `SELECT f.pk_layer, f.pk_frame, f.str_name, f.int_cores,
		       f.int_mem_max_used, f.int_exit_status, coalesce(f.pk_alloc, ''), f.int_ts_started, f.int_ts_stopped
		  FROM frame_history f
		  JOIN job_history j ON j.pk_job = f.pk_job
		 WHERE j.int_ts_started >= $1
		 ORDER BY f.pk_frame, f.int_ts_started, f.int_ts_stopped`,
		[]any{&layerPK, &framePK, &name, &cores, &memMax, &exit, &alloc, &started, &stopped}, func() error {
			l := r.layerOf[layerPK]
			if l == nil {
				return nil
			}
			if cur == nil || framePK != curPK {
				cur, curPK = &frame{name: name, first: started}, framePK
				l.frames = append(l.frames, cur)
			}
			if stopped == 0 {
				return nil // still running, or its run was never closed
			}
			cur.runs++
			if exit == memoryFailure {
				cur.kills++
			}
			cur.started, cur.stopped, cur.cores, cur.memMax, cur.alloc = started, stopped, cores, memMax, alloc
			return nil
		}, r.from)
}

func (r *reader) subs(ctx context.Context) error {
	var s workload.Sub
	return r.query(ctx, "subscriptions", `SELECT sh.str_name, a.str_name, s.int_size, s.int_burst
		  FROM subscription s
		  JOIN show sh ON sh.pk_show = s.pk_show
		  JOIN alloc a ON a.pk_alloc = s.pk_alloc
		 ORDER BY sh.str_name, a.str_name`,
		[]any{&s.Show, &s.Alloc, &s.Size, &s.Burst}, func() error {
			r.subList = append(r.subList, s)
			return nil
		})
}

// farm builds the simulator's farm from the rows read, counting in h what
// it holds and leaves out.
func (r *reader) farm(h *History) *workload.Farm {
	f := &workload.Farm{Hosts: r.hostList}
	for _, pk := range r.allocPKs {
		f.Allocs = append(f.Allocs, r.allocOf[pk])
	}
	shows := map[string]bool{}
	names := map[string]int{}
	var first int64
	for _, j := range r.jobList {
		// History keeps no priority: every job runs at one.
		wj := workload.Job{Show: j.show, Facility: j.facility, Priority: 1}
		// Layers in the order they first ran, as frames are.
		slices.SortStableFunc(j.layers, func(a, b *layer) int {
			return cmp.Or(cmp.Compare(a.firstRun(), b.firstRun()), strings.Compare(a.name, b.name))
		})
		for _, l := range j.layers {
			if wl, ok := r.layer(h, l); ok {
				wj.Layers = append(wj.Layers, wl)
			}
		}
		if len(wj.Layers) == 0 {
			continue
		}
		if len(f.Jobs) == 0 {
			first = j.arrive
		}
		// A name Cuebot gave a finished job may come again.
		wj.ID = j.name
		if n := names[j.name]; n > 0 {
			wj.ID = fmt.Sprintf("%s~%d", j.name, n+1)
		}
		names[j.name]++
		wj.Arrive = time.Duration(j.arrive-first) * time.Second
		for _, l := range wj.Layers {
			f.Frames += len(l.Frames)
		}
		h.Layers += len(wj.Layers)
		shows[j.show] = true
		f.Jobs = append(f.Jobs, wj)
	}
	h.Jobs = len(f.Jobs)
	h.First = time.Unix(first, 0).UTC()
	for _, s := range r.subList {
		if shows[s.Show] {
			f.Subs = append(f.Subs, s)
		}
	}
	return f
}

// layer is l as the simulator runs it, false when nothing of it is
// replayed.
func (r *reader) layer(h *History, l *layer) (workload.Layer, bool) {
	ran := slices.DeleteFunc(slices.Clone(l.frames), func(fr *frame) bool {
		if fr.runs == 0 {
			h.Running++
			return true
		}
		return false
	})
	if len(ran) == 0 {
		return workload.Layer{}, false
	}
	// The order frames first ran in is the order they are dispatched.
	slices.SortStableFunc(ran, func(a, b *frame) int { return cmp.Or(cmp.Compare(a.first, b.first), strings.Compare(a.name, b.name)) })
	var tags []string
	if l.liveTags != nil {
		tags = cluster.SplitLayerTags(*l.liveTags)
	}
	if len(tags) == 0 {
		// The layer is gone (or names no tag): it ran where its frames ran.
		set := map[string]bool{}
		for _, fr := range ran {
			if a, ok := r.allocOf[fr.alloc]; ok && a.Tag != "" {
				set[a.Tag] = true
			}
		}
		tags = slices.Sorted(maps.Keys(set))
	}
	if len(tags) == 0 {
		h.Untagged += len(ran)
		return workload.Layer{}, false
	}
	// Cuebot's schema allows negative minimums (cuesched's queue skips such
	// a layer); these frames ran, so they are replayed asking for nothing.
	wl := workload.Layer{Name: l.name, Cores: l.cores, Mem: max(0, l.mem), GPUs: max(0, l.gpus),
		GPUMem: max(0, l.gpuMem), Tags: tags, After: -1, Services: queue.SplitServices(l.services)}
	for _, fr := range ran {
		h.Attempts += fr.runs
		h.MemoryKills += fr.kills
		// History keeps whole seconds: a run shorter than one lasts one.
		rt := max(time.Second, time.Duration(fr.stopped-fr.started)*time.Second)
		wl.Frames = append(wl.Frames, workload.Frame{Runtime: rt, Used: max(0, fr.memMax)})
		// A layer gone took its threadability with it; a frame given more
		// cores than the layer asked for shows it was threadable.
		wl.Threadable = wl.Threadable || fr.cores > l.cores
	}
	if l.liveThreadable != nil {
		wl.Threadable = *l.liveThreadable
	}
	return wl, true
}
