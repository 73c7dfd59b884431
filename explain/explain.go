// Package explain says why a job's layers wait, read-only: it loads the
// farm inside one transaction with the host cache's own snapshot code, runs
// matching's Plan for the job's waiting frames as a dry plan (nothing is
// written) and reports, per layer, what it would book or the reason matching
// gives for its wait, after the job-level reasons that come before matching
// (cuesched explain).
package explain

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cache"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/preflight"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/queue"
	"github.com/cuesched/cuesched/reservation"
)

// Report is the explanation of one job, as --json prints it. Cores are
// core units (100 = one core), memory and GPU memory KB, as in the database.
type Report struct {
	At     time.Time `json:"at"`
	Policy string    `json:"policy"`
	Job    JobState  `json:"job"`
	Show   Show      `json:"show"`
	Folder Cap       `json:"folder"`
	Layers []Layer   `json:"layers"`
	// Blocked are the job-level reasons the scheduler does not look at the
	// job at all; the plan below them says what would happen without them.
	Blocked []string `json:"blocked,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// JobState is the job as the database holds it.
type JobState struct {
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	State      string      `json:"state"`
	Paused     bool        `json:"paused"`
	Facility   string      `json:"facility"`
	FacilityID string      `json:"facility_id"`
	OS         string      `json:"os,omitempty"`
	Priority   int64       `json:"priority"`
	Frames     FrameCounts `json:"frames"`
	Cap        Cap         `json:"cap"`
	// SameName counts other jobs with this name (job.str_name is not unique).
	SameName int `json:"same_name,omitempty"`
}

// FrameCounts are a job's or layer's frames by state (layer_stat, job_stat).
type FrameCounts struct {
	Total     int64 `json:"total"`
	Waiting   int64 `json:"waiting"`
	Running   int64 `json:"running"`
	Depend    int64 `json:"depend"`
	Dead      int64 `json:"dead"`
	Succeeded int64 `json:"succeeded"`
	Eaten     int64 `json:"eaten"`
}

// Cap is a cap with its usage as matching sees it (from the procs). A
// folder's negative max is unlimited; a job's refuses every booking, as
// Cuebot's job guard does (a job whose job_resource row is missing shows
// match.NoMax).
type Cap struct {
	ID       string `json:"id"`
	Name     string `json:"name,omitempty"`
	Cores    int64  `json:"cores"`
	MaxCores int64  `json:"max_cores"`
	GPUs     int64  `json:"gpus"`
	MaxGPUs  int64  `json:"max_gpus"`
}

// Show is the job's show and its subscriptions.
type Show struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Managed       bool           `json:"managed"`
	Active        bool           `json:"active"`
	Subscriptions []Subscription `json:"subscriptions"`
}

// Subscription is one of the show's subscriptions with its usage.
type Subscription struct {
	AllocID string `json:"alloc_id"`
	Alloc   string `json:"alloc"`
	Tag     string `json:"tag"`
	Size    int64  `json:"size"`
	Burst   int64  `json:"burst"`
	Cores   int64  `json:"cores"`
	GPUs    int64  `json:"gpus"`
}

// Layer is one layer: what it needs, where it may run, and the plan's outcome.
type Layer struct {
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	Frames     FrameCounts `json:"frames"`
	Needs      Resources   `json:"needs"`
	CoresMax   int64       `json:"cores_max"`
	Threadable bool        `json:"threadable"`
	Tags       []string    `json:"tags"`
	Services   []string    `json:"services"`
	StartAfter *time.Time  `json:"start_after,omitempty"`
	Clusters   []string    `json:"clusters"` // cluster keys
	// ClusterNames are the keys with allocation and facility names.
	ClusterNames []string   `json:"cluster_names"`
	Limits       []Limit    `json:"limits"`
	Hosts        []TagHosts `json:"hosts"`
	// Outcome is "book" (every waiting frame would be placed), "wait" (some
	// or all wait, Reason says why) or "idle" (no waiting frames).
	Outcome string `json:"outcome"`
	// Reason is one of matching's reasons, or ReasonSkipped.
	Reason     string      `json:"reason,omitempty"`
	Detail     string      `json:"detail,omitempty"`
	Placements []Placement `json:"placements"`
	// Unplaced is how many of the waiting frames the plan left waiting.
	Unplaced int `json:"unplaced"`
	// Memory is what each frame would be booked with and why, when memory
	// from history applies to the show (Options.Memory).
	Memory *Memory `json:"memory,omitempty"`
	// Run is how long its frames are expected to run, with reservations
	// on (Options.Reservations): what backfill judges by.
	Run *Run `json:"expected_run,omitempty"`
	// Reserved are the hosts reserved for it (cuesched.reservation).
	Reserved []Reserved `json:"reserved,omitempty"`
}

// Memory is the memory a layer's frames would be booked with (memory from
// history, match.BookedMemory): the request, or what its finished frames
// used plus headroom.
type Memory struct {
	Mem     int64 `json:"mem"`
	Request int64 `json:"request"`
	Trimmed bool  `json:"trimmed"`
	// Finished and MaxRSS are the history it was chosen by; MemFailed says
	// a frame of the layer was killed for its memory (exit status 33).
	Finished  int64  `json:"finished"`
	MaxRSS    int64  `json:"max_rss"`
	MemFailed bool   `json:"mem_failed"`
	Why       string `json:"why"`
}

// Limit is a limit record the layer is linked to.
type Limit struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Running int64  `json:"running"`
	Max     int64  `json:"max"` // -1: no max
}

// TagHosts is the farm behind one of a layer's tags: hosts carrying it in
// the job's facility, those UP and OPEN, and those the host cache offers
// (also above Cuebot's minimums and recently pinged) with their idle
// capacity.
type TagHosts struct {
	Tag       string `json:"tag"`
	Hosts     int64  `json:"hosts"`
	UpOpen    int64  `json:"up_open"`
	Offered   int64  `json:"offered"`
	IdleCores int64  `json:"idle_cores"`
	IdleMem   int64  `json:"idle_mem"`
	IdleGPUs  int64  `json:"idle_gpus"`
}

// Placement is a frame the dry plan would book, and where.
type Placement struct {
	Frame string    `json:"frame"`
	Host  string    `json:"host"`
	Size  Resources `json:"size"`
	// Why is why this host, when more than the fit chose it (locality).
	Why string `json:"why,omitempty"`
}

// Resources is match.Resources as --json prints it.
type Resources struct {
	Cores  int64 `json:"cores"`
	Mem    int64 `json:"mem"`
	GPUs   int64 `json:"gpus"`
	GPUMem int64 `json:"gpu_mem"`
}

func resourcesOf(r match.Resources) Resources { return Resources{r.Cores, r.Mem, r.GPUs, r.GPUMem} }

// Options say what to explain and with which matching settings.
type Options struct {
	Job   string // job.str_name
	Layer string // only this layer; empty: every layer
	// PolicyName is how the report names Policy (a run setting's value).
	PolicyName      string
	Policy          match.Policy
	Order           match.Order
	SelfishServices []string
	Locality        bool
	HostPingMaxAge  time.Duration
	// Memory is memory from history, as cuesched run's settings give it.
	Memory match.Memory
	// Reservations is cuesched run's setting: each layer's expected run is
	// reported.
	Reservations bool
}

// Read builds the report inside tx, which should be REPEATABLE READ (one
// consistent picture) and may be READ ONLY: nothing is written.
func Read(ctx context.Context, tx pgx.Tx, opt Options) (*Report, error) {
	// The snapshot loader reads timestamps as the replication connections
	// send them: ISO style, UTC.
	if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'`); err != nil {
		return nil, fmt.Errorf("set time zone: %w", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL DateStyle = 'ISO, MDY'`); err != nil {
		return nil, fmt.Errorf("set date style: %w", err)
	}
	if err := preflight.CuebotSchema(ctx, tx); err != nil {
		return nil, err
	}
	rep := &Report{Policy: opt.PolicyName, Show: Show{Subscriptions: []Subscription{}}}
	if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&rep.At); err != nil {
		return nil, fmt.Errorf("read the time: %w", err)
	}
	j := &rep.Job
	var folderName string
	rows, err := tx.Query(ctx, `
SELECT j.pk_job, j.str_name, j.str_state, j.b_paused, j.pk_show, s.str_name, s.b_scheduler_managed, s.b_active,
       j.pk_facility, coalesce(fa.str_name, ''), j.pk_folder, coalesce(fo.str_name, ''), coalesce(j.str_os, ''),
       coalesce(jr.int_priority, 0), coalesce(js.int_waiting_count, 0), coalesce(js.int_running_count, 0),
       coalesce(js.int_depend_count, 0), coalesce(js.int_dead_count, 0), coalesce(js.int_succeeded_count, 0),
       coalesce(js.int_eaten_count, 0), coalesce(j.int_frame_count, 0)
  FROM job j
  JOIN show s ON s.pk_show = j.pk_show
  LEFT JOIN facility fa ON fa.pk_facility = j.pk_facility
  LEFT JOIN folder fo ON fo.pk_folder = j.pk_folder
  LEFT JOIN job_resource jr ON jr.pk_job = j.pk_job
  LEFT JOIN job_stat js ON js.pk_job = j.pk_job
 WHERE j.str_name = $1
 ORDER BY (j.str_state = 'PENDING') DESC, j.ts_started DESC NULLS LAST, j.pk_job`, opt.Job)
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", opt.Job, err)
	}
	n := 0
	for rows.Next() {
		n++
		if n > 1 {
			continue
		}
		f := &j.Frames
		if err := rows.Scan(&j.ID, &j.Name, &j.State, &j.Paused, &rep.Show.ID, &rep.Show.Name, &rep.Show.Managed,
			&rep.Show.Active, &j.FacilityID, &j.Facility, &rep.Folder.ID, &folderName, &j.OS, &j.Priority,
			&f.Waiting, &f.Running, &f.Depend, &f.Dead, &f.Succeeded, &f.Eaten, &f.Total); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read job %s: %w", opt.Job, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read job %s: %w", opt.Job, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("no job named %q (job.str_name)", opt.Job)
	}
	j.SameName = n - 1
	rep.Folder.Name = folderName

	layers, err := readLayers(ctx, tx, j.ID, opt.Layer)
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		if opt.Layer != "" {
			return nil, fmt.Errorf("job %s has no layer named %q", j.Name, opt.Layer)
		}
		return nil, fmt.Errorf("job %s has no layers", j.Name)
	}

	// The farm as the host cache loads it, with the cache's own code.
	// No OnCounters: nothing here recomputes counters.
	replica := cache.NewReplica(cache.ReplicaConfig{
		Logger:         slog.New(slog.DiscardHandler),
		HostPingMaxAge: opt.HostPingMaxAge,
		Locality:       opt.Locality,
	})
	if err := replica.LoadSnapshot(ctx, tx); err != nil {
		return nil, fmt.Errorf("load the farm: %w", err)
	}
	hosts, usage := replica.Hosts(), replica.Usage()

	names, err := readNames(ctx, tx, j.FacilityID)
	if err != nil {
		return nil, err
	}
	keyer, err := readKeyer(ctx, tx, hosts)
	if err != nil {
		return nil, err
	}
	// The allocations a round of the layers' clusters spans, as the
	// scheduler gives them to Plan: an allocation cluster's own, every
	// allocation of the facility for a tag bucket.
	var allocs []string
	bucket := false
	for _, el := range layers {
		for _, k := range keyer.OfLayer(j.FacilityID, el.layer.Tags) {
			switch {
			case k.Kind == cluster.KindTags:
				bucket = true
			case !slices.Contains(allocs, k.Alloc):
				allocs = append(allocs, k.Alloc)
			}
		}
	}
	for _, a := range hosts.Allocs() {
		if a.Facility != j.FacilityID {
			continue
		}
		if bucket && !slices.Contains(allocs, a.ID) {
			allocs = append(allocs, a.ID)
		}
		if sub, ok := usage.Subscription(rep.Show.ID, a.ID); ok {
			rep.Show.Subscriptions = append(rep.Show.Subscriptions, Subscription{AllocID: a.ID, Alloc: names.allocs[a.ID],
				Tag: a.Tag, Size: sub.Size, Burst: sub.Burst, Cores: sub.Cores, GPUs: sub.GPUs})
		}
	}
	jc := usage.Job(j.ID)
	j.Cap = Cap{ID: j.ID, Name: j.Name, Cores: jc.Cores, MaxCores: jc.MaxCores, GPUs: jc.GPUs, MaxGPUs: jc.MaxGPUs}
	fc := usage.Folder(rep.Folder.ID)
	rep.Folder.Cores, rep.Folder.MaxCores, rep.Folder.GPUs, rep.Folder.MaxGPUs = fc.Cores, fc.MaxCores, fc.GPUs, fc.MaxGPUs

	// Job-level reasons, in the order the pending-layer queue applies them.
	if !rep.Show.Managed {
		rep.Blocked = append(rep.Blocked, fmt.Sprintf("show %s is not scheduler-managed (show.b_scheduler_managed is false): Cuebot books it, cuesched never does", rep.Show.Name))
	}
	if !rep.Show.Active {
		rep.Blocked = append(rep.Blocked, fmt.Sprintf("show %s is not active (show.b_active is false)", rep.Show.Name))
	}
	if j.State != "PENDING" {
		rep.Blocked = append(rep.Blocked, fmt.Sprintf("job is %s, not PENDING", j.State))
	}
	if j.Paused {
		rep.Blocked = append(rep.Blocked, "job is paused")
	}

	// The dry plan: every waiting frame of the job's layers against the
	// whole facility, as one round would see it if this job drew first.
	var live []*match.Layer
	for _, el := range layers {
		if len(el.layer.Frames) == 0 {
			continue
		}
		// The pending-layer queue leaves such a layer out (and logs it once).
		if reason, detail := queue.SkipReason(el.layer, el.tags); reason != "" {
			el.out.Reason, el.out.Detail = ReasonSkipped, reason+": "+detail
			continue
		}
		el.layer.JobID, el.layer.JobName, el.layer.ShowID, el.layer.ShowName = j.ID, j.Name, rep.Show.ID, rep.Show.Name
		el.layer.FolderID, el.layer.Facility, el.layer.Priority, el.layer.OS = rep.Folder.ID, j.FacilityID, j.Priority, j.OS
		live = append(live, el.layer)
	}
	for _, el := range layers {
		el.out.Hosts = tagCensus(hosts, j.FacilityID, el.layer.Tags)
	}
	if err := readTagHosts(ctx, tx, j.FacilityID, layers); err != nil {
		return nil, err
	}
	if len(live) == 0 {
		rep.Blocked = append(rep.Blocked, noWaitingReason(j.Frames))
	}
	now := time.Now()
	var resv []match.Reservation
	if opt.Reservations {
		match.FillServiceRuns(live)
		if resv, err = reservation.All(ctx, tx); err != nil {
			return nil, err
		}
	}
	res := match.Plan(live, hosts, usage, match.Options{
		Now: now, Seed: 1, Policy: opt.Policy, Order: opt.Order,
		SelfishServices: opt.SelfishServices, Allocs: allocs, Locality: opt.Locality, Memory: opt.Memory,
		Reservations: match.NewReservationSet(resv),
	})
	byLayer := map[*match.Layer]*Layer{}
	for _, el := range layers {
		byLayer[el.layer] = &el.out
	}
	for _, p := range res.Placements {
		el := byLayer[p.Layer]
		el.Placements = append(el.Placements, Placement{Frame: p.Frame.Name, Host: p.Host.Name, Size: resourcesOf(p.Size),
			Why: cmp.Or(reservedWhy(&p, resv, now), warmWhy(&p, now))})
	}
	readable := names.replacer(rep)
	for _, w := range res.Waits {
		el := byLayer[w.Layer]
		el.Reason, el.Detail = string(w.Reason), readable.Replace(w.Detail)
	}
	for _, el := range layers {
		o := &el.out
		o.Clusters, o.ClusterNames = []string{}, []string{}
		for _, k := range keyer.OfLayer(j.FacilityID, el.layer.Tags) {
			o.Clusters = append(o.Clusters, k.String())
			o.ClusterNames = append(o.ClusterNames, readable.Replace(k.String()))
		}
		o.Limits = []Limit{}
		for _, id := range el.layer.Limits {
			lim, ok := usage.Limit(id)
			if !ok {
				continue
			}
			if lim.Max == math.MaxInt64 { // the cache's reading of a NULL int_max_value
				lim.Max = -1
			}
			o.Limits = append(o.Limits, Limit{ID: id, Name: names.limits[id], Running: lim.Running, Max: lim.Max})
		}
		switch {
		case len(el.layer.Frames) == 0:
			o.Outcome = "idle"
		case o.Reason != "":
			o.Outcome = "wait"
		default:
			o.Outcome = "book"
		}
		if o.Placements == nil {
			o.Placements = []Placement{}
		}
		o.Unplaced = len(el.layer.Frames) - len(o.Placements)
		if opt.Reservations {
			o.Run = expectedRun(el.layer)
			o.Reserved = reservedFor(el.layer.ID, resv)
		}
		if mc := match.BookedMemory(el.layer, opt.Memory); mc.Why != "" {
			h := el.layer.History
			o.Memory = &Memory{Mem: mc.Mem, Request: el.layer.Min.Mem, Trimmed: mc.Trimmed, Finished: h.Finished,
				MaxRSS: h.MaxRSS, MemFailed: h.MemFailed, Why: mc.Why}
		}
		rep.Layers = append(rep.Layers, *o)
	}
	rep.Notes = append(rep.Notes, "a dry plan of this job alone: in the scheduler's rounds other pending work of the same "+
		"clusters competes for these hosts (lowest subscription tier first, then priority), so what it would book is an upper bound")
	return rep, nil
}

func noWaitingReason(f FrameCounts) string {
	return fmt.Sprintf("no waiting frames: %d depend, %d running, %d dead, %d succeeded, %d eaten",
		f.Depend, f.Running, f.Dead, f.Succeeded, f.Eaten)
}

// ReasonSkipped is the reason of a layer the pending-layer queue skips: its
// row cannot be booked (queue.SkipReason), and Detail says why and what to
// fix.
const ReasonSkipped = "skipped"

type layerRead struct {
	layer *match.Layer
	tags  string // layer.str_tags as read
	out   Layer
}

// readLayers reads the job's layers (or the one named) with what
// matching needs and their waiting frames in Cuebot's dispatch order.
func readLayers(ctx context.Context, tx pgx.Tx, jobID, only string) ([]*layerRead, error) {
	rows, err := tx.Query(ctx, `
SELECT l.pk_layer, l.str_name, coalesce(l.str_tags, ''), l.int_cores_min, l.int_mem_min, l.int_gpus_min,
       l.int_gpu_mem_min, coalesce(l.int_cores_max, 0), l.b_threadable, coalesce(l.str_services, ''),
       l.ts_start_after,
       ARRAY(SELECT DISTINCT ll.pk_limit_record::text FROM layer_limit ll WHERE ll.pk_layer = l.pk_layer ORDER BY 1),
       coalesce(ls.int_total_count, 0), coalesce(ls.int_waiting_count, 0), coalesce(ls.int_running_count, 0),
       coalesce(ls.int_depend_count, 0), coalesce(ls.int_dead_count, 0), coalesce(ls.int_succeeded_count, 0),
       coalesce(ls.int_eaten_count, 0), coalesce(lm.int_max_rss, 0),
       EXISTS (SELECT 1 FROM frame x WHERE x.pk_layer = l.pk_layer AND x.int_exit_status = 33),
       coalesce(lu.int_clock_time_success / nullif(lu.int_frame_success_count, 0), 0),
       coalesce(ju.int_clock_time_success / nullif(ju.int_frame_success_count, 0), 0)
  FROM layer l
  LEFT JOIN layer_stat ls ON ls.pk_layer = l.pk_layer
  LEFT JOIN layer_mem lm ON lm.pk_layer_mem = l.pk_layer AND lm.pk_layer = l.pk_layer
  LEFT JOIN layer_usage lu ON lu.pk_layer = l.pk_layer
  LEFT JOIN job_usage ju ON ju.pk_job = l.pk_job
 WHERE l.pk_job = $1 AND ($2 = '' OR l.str_name = $2)
 ORDER BY l.int_dispatch_order, l.str_name`, jobID, only)
	if err != nil {
		return nil, fmt.Errorf("read layers: %w", err)
	}
	var out []*layerRead
	byID := map[string]*layerRead{}
	for rows.Next() {
		lr := &layerRead{layer: &match.Layer{}}
		l, o := lr.layer, &lr.out
		var tags, services string
		var startAfter *time.Time
		var layerRun, jobRun int64 // seconds
		f := &o.Frames
		if err := rows.Scan(&l.ID, &l.Name, &tags, &l.Min.Cores, &l.Min.Mem, &l.Min.GPUs, &l.Min.GPUMem, &l.CoresMax,
			&l.Threadable, &services, &startAfter, &l.Limits, &f.Total, &f.Waiting, &f.Running, &f.Depend, &f.Dead,
			&f.Succeeded, &f.Eaten, &l.History.MaxRSS, &l.History.MemFailed, &layerRun, &jobRun); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read layers: %w", err)
		}
		l.Runs.Layer, l.Runs.Job = time.Duration(layerRun)*time.Second, time.Duration(jobRun)*time.Second
		l.Tags, lr.tags = cluster.SplitLayerTags(tags), tags
		l.Services = queue.SplitServices(services)
		if startAfter != nil {
			l.StartAfter = *startAfter
			sa := startAfter.UTC()
			o.StartAfter = &sa
		}
		if len(l.Limits) == 0 {
			l.Limits = nil
		}
		l.Waiting = f.Waiting
		l.History.Finished = f.Succeeded
		o.ID, o.Name, o.Needs, o.CoresMax, o.Threadable = l.ID, l.Name, resourcesOf(l.Min), l.CoresMax, l.Threadable
		o.Tags, o.Services = append([]string{}, l.Tags...), append([]string{}, l.Services...)
		out = append(out, lr)
		byID[l.ID] = lr
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read layers: %w", err)
	}
	rows, err = tx.Query(ctx, `
SELECT pk_layer, pk_frame, str_name, coalesce(int_version, 0), int_number
  FROM frame
 WHERE pk_job = $1 AND str_state = 'WAITING'
 ORDER BY int_dispatch_order, int_layer_order`, jobID)
	if err != nil {
		return nil, fmt.Errorf("read waiting frames: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var layerID string
		var f match.Frame
		if err := rows.Scan(&layerID, &f.ID, &f.Name, &f.Version, &f.Number); err != nil {
			return nil, fmt.Errorf("read waiting frames: %w", err)
		}
		if lr := byID[layerID]; lr != nil {
			lr.layer.Frames = append(lr.layer.Frames, f)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read waiting frames: %w", err)
	}
	return out, nil
}

// tagCensus is what the host cache offers under each tag, before the plan
// takes anything.
func tagCensus(hosts *cache.Hosts, facility string, tags []string) []TagHosts {
	out := []TagHosts{}
	for _, t := range tags {
		th := TagHosts{Tag: t}
		hosts.Walk(facility, t, match.Resources{}, nil, func(h match.Host) bool {
			th.Offered++
			th.IdleCores += h.Idle.Cores
			th.IdleMem += h.Idle.Mem
			th.IdleGPUs += h.Idle.GPUs
			return true
		})
		out = append(out, th)
	}
	return out
}

// readTagHosts counts, per layer tag, the hosts of the facility carrying it
// and those UP and OPEN, so a tag whose hosts are all down or locked reads
// as such rather than as a farm without capacity.
func readTagHosts(ctx context.Context, tx pgx.Tx, facility string, layers []*layerRead) error {
	var tags []string
	for _, lr := range layers {
		for _, t := range lr.layer.Tags {
			if !slices.Contains(tags, t) {
				tags = append(tags, t)
			}
		}
	}
	if len(tags) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `
SELECT t.tag, count(*), count(*) FILTER (WHERE hs.str_state = 'UP' AND h.str_lock_state = 'OPEN')
  FROM (SELECT DISTINCT pk_host, lower(trim(str_tag)) AS tag FROM host_tag
         WHERE lower(trim(str_tag)) = ANY($2::text[])) t
  JOIN host h ON h.pk_host = t.pk_host
  JOIN alloc a ON a.pk_alloc = h.pk_alloc
  LEFT JOIN host_stat hs ON hs.pk_host = h.pk_host
 WHERE a.pk_facility = $1
 GROUP BY t.tag`, facility, tags)
	if err != nil {
		return fmt.Errorf("count hosts per tag: %w", err)
	}
	counts := map[string][2]int64{}
	var tag string
	var c [2]int64
	if _, err := pgx.ForEachRow(rows, []any{&tag, &c[0], &c[1]}, func() error {
		counts[tag] = c
		return nil
	}); err != nil {
		return fmt.Errorf("count hosts per tag: %w", err)
	}
	for _, lr := range layers {
		for i := range lr.out.Hosts {
			th := &lr.out.Hosts[i]
			th.Hosts, th.UpOpen = counts[th.Tag][0], counts[th.Tag][1]
		}
	}
	return nil
}

// names are display names for the keys matching's details carry.
type names struct {
	allocs map[string]string // pk_alloc -> alloc.str_name, of the facility
	limits map[string]string // pk_limit_record -> str_name
}

func readNames(ctx context.Context, tx pgx.Tx, facility string) (names, error) {
	n := names{allocs: map[string]string{}, limits: map[string]string{}}
	var id, name string
	rows, err := tx.Query(ctx, `SELECT pk_alloc, str_name FROM alloc WHERE pk_facility = $1`, facility)
	if err != nil {
		return n, fmt.Errorf("read allocations: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&id, &name}, func() error { n.allocs[id] = name; return nil }); err != nil {
		return n, fmt.Errorf("read allocations: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT pk_limit_record, str_name FROM limit_record`)
	if err != nil {
		return n, fmt.Errorf("read limits: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&id, &name}, func() error { n.limits[id] = name; return nil }); err != nil {
		return n, fmt.Errorf("read limits: %w", err)
	}
	return n, nil
}

// replacer turns the keys in matching's wait details into names.
func (n names) replacer(rep *Report) *strings.Replacer {
	var pairs []string
	add := func(id, name string) {
		if id != "" && name != "" {
			pairs = append(pairs, id, name)
		}
	}
	add(rep.Job.ID, rep.Job.Name)
	add(rep.Folder.ID, rep.Folder.Name)
	add(rep.Show.ID, rep.Show.Name)
	add(rep.Job.FacilityID, rep.Job.Facility)
	for id, name := range n.allocs {
		add(id, name)
	}
	for id, name := range n.limits {
		add(id, name)
	}
	return strings.NewReplacer(pairs...)
}

// readKeyer builds cluster keys as the scheduler does: from the allocations
// and the deployment's tag bucket count.
func readKeyer(ctx context.Context, tx pgx.Tx, hosts *cache.Hosts) (*cluster.Keyer, error) {
	var buckets int
	err := tx.QueryRow(ctx, `SELECT value::int FROM cuesched.setting WHERE name = 'tag_buckets'`).Scan(&buckets)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("cuesched.setting has no tag_buckets: run `cuesched migrate up`")
	}
	if err != nil {
		return nil, fmt.Errorf("read tag_buckets: %w", err)
	}
	return cluster.NewKeyer(hosts.Allocs(), buckets), nil
}

// print writes the report for a render-farm engineer.
func (rep *Report) Print(w io.Writer) {
	j := &rep.Job
	fmt.Fprintf(w, "job %s  (%s)\n", j.Name, j.ID)
	if j.SameName > 0 {
		fmt.Fprintf(w, "  %d other job(s) share this name; this is the %s one started last\n", j.SameName, j.State)
	}
	fmt.Fprintf(w, "  state %s, paused %s, priority %d, facility %s", j.State, yesNo(j.Paused), j.Priority, j.Facility)
	if j.OS != "" {
		fmt.Fprintf(w, ", os %s", j.OS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  frames: %s\n", fmtCounts(j.Frames))
	fmt.Fprintf(w, "  job cap: %s\n", fmtCap(Cap{Cores: j.Cap.Cores, MaxCores: j.Cap.MaxCores, GPUs: j.Cap.GPUs, MaxGPUs: j.Cap.MaxGPUs}, false))
	fmt.Fprintf(w, "  folder %s cap: %s\n", rep.Folder.Name, fmtCap(rep.Folder, true))
	s := &rep.Show
	fmt.Fprintf(w, "show %s: scheduler-managed %s, active %s\n", s.Name, yesNo(s.Managed), yesNo(s.Active))
	if len(s.Subscriptions) == 0 {
		fmt.Fprintf(w, "  no subscription in facility %s: burst stops every booking\n", j.Facility)
	}
	for _, sub := range s.Subscriptions {
		fmt.Fprintf(w, "  subscription %s (tag %s): %s cores in use of burst %s, size %s", sub.Alloc, sub.Tag,
			fmtCores(sub.Cores), fmtCores(sub.Burst), fmtCores(sub.Size))
		if sub.GPUs > 0 {
			fmt.Fprintf(w, ", %d gpus", sub.GPUs)
		}
		fmt.Fprintln(w)
	}
	if len(rep.Blocked) > 0 {
		fmt.Fprintln(w, "not booked, before any matching:")
		for _, b := range rep.Blocked {
			fmt.Fprintf(w, "  - %s\n", b)
		}
	}
	for i := range rep.Layers {
		rep.Layers[i].print(w, len(rep.Blocked) > 0)
	}
	fmt.Fprintf(w, "\npolicy %s, farm as of %s\n", rep.Policy, rep.At.UTC().Format(time.RFC3339))
	if slices.ContainsFunc(rep.Layers, func(l Layer) bool { return l.Reason == string(match.ReasonNoFit) }) {
		fmt.Fprintln(w, "units in no-fit details: cores are core units (100 = one core), memory and gpu_mem KB")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (l *Layer) print(w io.Writer, blocked bool) {
	fmt.Fprintf(w, "\nlayer %s\n", l.Name)
	fmt.Fprintf(w, "  frames: %s\n", fmtCounts(l.Frames))
	fmt.Fprintf(w, "  needs: %s", fmtNeedCores(l.Needs.Cores))
	if l.CoresMax > 0 {
		fmt.Fprintf(w, " (max %s)", fmtCores(l.CoresMax))
	}
	if l.Threadable {
		fmt.Fprint(w, ", threadable")
	}
	fmt.Fprintf(w, ", memory %s", fmtMem(l.Needs.Mem))
	if l.Needs.GPUs > 0 || l.Needs.GPUMem > 0 {
		fmt.Fprintf(w, ", %d gpus, gpu memory %s", l.Needs.GPUs, fmtMem(l.Needs.GPUMem))
	}
	fmt.Fprintf(w, "; tags %s; services %s\n", orNone(strings.Join(l.Tags, " | ")), orNone(strings.Join(l.Services, ",")))
	if m := l.Memory; m != nil {
		fmt.Fprintf(w, "  memory %s (%s)\n", fmtMem(m.Mem), m.Why)
	}
	if r := l.Run; r != nil {
		fmt.Fprintf(w, "  %s\n", r.Why)
	}
	for _, r := range l.Reserved {
		start := "an unknown start"
		if r.Start != nil {
			start = r.Start.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  host %s reserved for it from %s\n", r.Host, start)
	}
	if l.StartAfter != nil {
		fmt.Fprintf(w, "  starts after %s\n", l.StartAfter.Format(time.RFC3339))
	}
	if len(l.ClusterNames) > 0 {
		fmt.Fprintf(w, "  clusters: %s\n", strings.Join(l.ClusterNames, ", "))
	}
	for _, lim := range l.Limits {
		max := "no max"
		if lim.Max >= 0 {
			max = "max " + strconv.FormatInt(lim.Max, 10)
		}
		fmt.Fprintf(w, "  limit %s: %d running, %s\n", lim.Name, lim.Running, max)
	}
	for _, th := range l.Hosts {
		fmt.Fprintf(w, "  hosts tagged %s: %d, %d UP and OPEN, %d offered with %s idle cores, %s idle memory",
			th.Tag, th.Hosts, th.UpOpen, th.Offered, fmtCores(th.IdleCores), fmtMem(th.IdleMem))
		if th.IdleGPUs > 0 {
			fmt.Fprintf(w, ", %d idle gpus", th.IdleGPUs)
		}
		fmt.Fprintln(w)
	}
	prefix := "=>"
	if blocked {
		prefix = "=> were the job bookable:"
	}
	if l.Outcome == "idle" {
		fmt.Fprintf(w, "=> nothing to book: no waiting frames\n")
		return
	}
	if len(l.Placements) > 0 {
		fmt.Fprintf(w, "%s would book %d frame(s) on hosts %s\n", prefix, len(l.Placements), fmtHosts(l.Placements))
		printWhy(w, l.Placements)
		prefix = "  and"
	}
	if l.Reason != "" {
		fmt.Fprintf(w, "%s %d frame(s) wait: %s: %s\n", prefix, l.Unplaced, l.Reason, l.Detail)
	}
}

// fmtHosts lists hosts in the order they were first chosen, with counts.
func fmtHosts(ps []Placement) string {
	var order []string
	count := map[string]int{}
	for _, p := range ps {
		if count[p.Host] == 0 {
			order = append(order, p.Host)
		}
		count[p.Host]++
	}
	parts := make([]string, len(order))
	for i, h := range order {
		parts[i] = fmt.Sprintf("%s (%d)", h, count[h])
	}
	return strings.Join(parts, ", ")
}

func fmtCounts(f FrameCounts) string {
	return fmt.Sprintf("%d waiting, %d running, %d depend, %d dead, %d succeeded, %d eaten (of %d)",
		f.Waiting, f.Running, f.Depend, f.Dead, f.Succeeded, f.Eaten, f.Total)
}

func fmtCap(c Cap, folder bool) string {
	max := func(n int64, f func(int64) string) string {
		switch {
		case n == match.NoMax || folder && n < 0:
			return "unlimited"
		case n < 0:
			return strconv.FormatInt(n, 10) + " (refuses every booking)"
		}
		return f(n)
	}
	return fmt.Sprintf("%s of %s cores, %d of %s gpus in use", fmtCores(c.Cores), max(c.MaxCores, fmtCores),
		c.GPUs, max(c.MaxGPUs, func(n int64) string { return strconv.FormatInt(n, 10) }))
}

// fmtCores shows core units as cores: 150 is "1.5".
func fmtCores(units int64) string {
	if units%100 == 0 {
		return strconv.FormatInt(units/100, 10)
	}
	return strconv.FormatFloat(float64(units)/100, 'f', -1, 64)
}

// fmtNeedCores reads a layer's cores minimum as Cuebot's sizing does.
func fmtNeedCores(units int64) string {
	switch {
	case units == 0:
		return "all of a host's cores"
	case units < 0:
		return "all but " + fmtCores(-units) + " of a host's cores"
	case units == 100:
		return "1 core"
	}
	return fmtCores(units) + " cores"
}

// fmtMem shows KB as GB or MB.
func fmtMem(kb int64) string {
	const gb = 1048576
	if kb >= gb || kb <= -gb {
		return strconv.FormatFloat(float64(kb)/gb, 'f', 1, 64) + " GB"
	}
	return strconv.FormatInt(kb/1024, 10) + " MB"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
