package cache

import (
	"sync"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/match"
)

// Usage is usage and caps as last replicated (it implements match.Caps).
// Usage is derived from the replicated proc rows, not from Cuebot's
// counters, and is exact after every applied transaction: cores and GPUs in
// use per (show, allocation of the proc's host), folder (of the proc's job),
// job and layer, and the running procs (those holding a frame) per layer and
// per limit. Caps come from subscription (size, burst), job_resource and
// folder_resource; limits from limit_record and layer_limit, read by query
// (limits.go).
type Usage struct {
	mu sync.RWMutex
	st *usageState
}

// NewUsage returns empty usage.
func NewUsage() *Usage { return &Usage{st: newUsageState(nil)} }

type use struct{ cores, gpus, running int64 }

type subKey struct{ show, alloc string }

type showRow struct{ active, managed bool }

type subRow struct {
	show, alloc string
	size, burst int64
}

type jobRow struct{ show, folder, dept string }

// capRow is a job_resource or folder_resource row: owner is its pk_job or
// pk_folder.
type capRow struct {
	owner             string
	maxCores, maxGPUs int64
}

// procRec is a replicated proc with where it is counted: the allocation of
// its host and the folder of its job when it was counted, so that moving a
// host or a job moves its procs' usage exactly.
type procRec struct {
	host, show, layer, job, frame string
	cores, gpus                   int64
	alloc, folder                 string
}

type usageState struct {
	shows     map[string]showRow
	subs      map[string]subRow
	subOf     map[subKey]string
	folderRes map[string]capRow
	folderCap map[string]string // pk_folder -> pk_folder_resource
	jobs      map[string]jobRow
	jobRes    map[string]capRow
	jobCap    map[string]string // pk_job -> pk_job_resource
	layers    map[string]string // pk_layer -> pk_job
	hostAlloc map[string]string
	procs     map[string]*procRec
	byHost    map[string]map[*procRec]struct{}
	byJob     map[string]map[*procRec]struct{}

	subUse    map[subKey]use
	jobUse    map[string]use
	folderUse map[string]use
	layerUse  map[string]use

	limits  *limitSet
	limitOn map[string]int64 // running procs per limit

	// For the counters (CounterChanges), drained by the replica after each
	// transaction: capped is the counter rows whose cap changed (a row
	// Cuebot's guard refused is retried then); moved is the subscriptions
	// a host's procs left and joined when it changed allocation (both are
	// off their sums until recomputed).
	capped []CounterRows
	moved  []MovedHost
}

func newUsageState(limits *limitSet) *usageState {
	if limits == nil {
		limits = &limitSet{max: map[string]int64{}, ofLayer: map[string][]string{}}
	}
	return &usageState{
		shows: map[string]showRow{}, subs: map[string]subRow{}, subOf: map[subKey]string{},
		folderRes: map[string]capRow{}, folderCap: map[string]string{},
		jobs: map[string]jobRow{}, jobRes: map[string]capRow{}, jobCap: map[string]string{},
		layers: map[string]string{}, hostAlloc: map[string]string{}, procs: map[string]*procRec{},
		byHost: map[string]map[*procRec]struct{}{}, byJob: map[string]map[*procRec]struct{}{},
		subUse: map[subKey]use{}, jobUse: map[string]use{}, folderUse: map[string]use{}, layerUse: map[string]use{},
		limits: limits, limitOn: map[string]int64{},
	}
}

var (
	unlimited = match.Cap{MaxCores: -1, MaxGPUs: -1}
	// unknownJob is a job whose job_resource row the stream has not brought
	// yet: matching lets it book (a negative max would refuse it, as Cuebot's
	// guard does) and the booking's re-check reads the row.
	unknownJob = match.Cap{MaxCores: match.NoMax, MaxGPUs: match.NoMax}
)

// Subscription implements match.Caps.
func (u *Usage) Subscription(showID, allocID string) (match.Subscription, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	k := subKey{showID, allocID}
	id, ok := u.st.subOf[k]
	if !ok {
		return match.Subscription{}, false
	}
	row, used := u.st.subs[id], u.st.subUse[k]
	return match.Subscription{Size: row.size, Burst: row.burst, Cores: used.cores, GPUs: used.gpus}, true
}

// Job implements match.Caps. A job without a job_resource row is
// unlimited here; the booking's commit checks the locked row anyway.
func (u *Usage) Job(jobID string) match.Cap {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.st.capOf(u.st.jobCap, u.st.jobRes, u.st.jobUse, jobID, unknownJob)
}

// Folder implements match.Caps (-1: unlimited, as folder_resource has it).
func (u *Usage) Folder(folderID string) match.Cap {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.st.capOf(u.st.folderCap, u.st.folderRes, u.st.folderUse, folderID, unlimited)
}

func (st *usageState) capOf(capOf map[string]string, rows map[string]capRow, uses map[string]use, id string, none match.Cap) match.Cap {
	c := none
	if rid, ok := capOf[id]; ok {
		row := rows[rid]
		c.MaxCores, c.MaxGPUs = row.maxCores, row.maxGPUs
	}
	used := uses[id]
	c.Cores, c.GPUs = used.cores, used.gpus
	return c
}

// Limit implements match.Caps. A limit whose int_max_value is NULL has a
// max of 0 (readLimits).
func (u *Usage) Limit(limitID string) (match.Limit, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	max, ok := u.st.limits.max[limitID]
	if !ok {
		return match.Limit{}, false
	}
	return match.Limit{Running: u.st.limitOn[limitID], Max: max}, true
}

// Layer is a layer's usage: cores and GPUs its procs hold, and how many of
// them run a frame.
func (u *Usage) Layer(layerID string) (cores, gpus, running int64) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	used := u.st.layerUse[layerID]
	return used.cores, used.gpus, used.running
}

// LayerLimits are the limit records a layer is linked to (layer_limit), as
// last read.
func (u *Usage) LayerLimits(layerID string) []string {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return append([]string(nil), u.st.limits.ofLayer[layerID]...)
}

// Show reports whether a show is scheduler-managed and active, as last
// replicated; ok is false for a show the cache does not know.
func (u *Usage) Show(showID string) (managed, active, ok bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	s, ok := u.st.shows[showID]
	return s.managed, s.active, ok
}

func addUse(m map[string]use, k string, d use) {
	if k == "" {
		return
	}
	u := m[k]
	u.cores, u.gpus, u.running = u.cores+d.cores, u.gpus+d.gpus, u.running+d.running
	if u == (use{}) {
		delete(m, k)
	} else {
		m[k] = u
	}
}

// count adds (sign 1) or removes (sign -1) a proc's usage where it is
// counted.
func (st *usageState) count(p *procRec, sign int64) {
	d := use{cores: sign * p.cores, gpus: sign * p.gpus}
	if p.frame != "" {
		d.running = sign
	}
	if p.alloc != "" {
		k := subKey{p.show, p.alloc}
		u := st.subUse[k]
		u.cores, u.gpus = u.cores+d.cores, u.gpus+d.gpus
		if u == (use{}) {
			delete(st.subUse, k)
		} else {
			st.subUse[k] = u
		}
	}
	addUse(st.jobUse, p.job, use{cores: d.cores, gpus: d.gpus})
	addUse(st.folderUse, p.folder, use{cores: d.cores, gpus: d.gpus})
	addUse(st.layerUse, p.layer, d)
	if d.running != 0 {
		for _, l := range st.limits.ofLayer[p.layer] {
			if st.limitOn[l] += d.running; st.limitOn[l] == 0 {
				delete(st.limitOn, l)
			}
		}
	}
}

func link(m map[string]map[*procRec]struct{}, k string, p *procRec) {
	if k == "" {
		return
	}
	s := m[k]
	if s == nil {
		s = map[*procRec]struct{}{}
		m[k] = s
	}
	s[p] = struct{}{}
}

func unlink(m map[string]map[*procRec]struct{}, k string, p *procRec) {
	if s := m[k]; s != nil {
		delete(s, p)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// setHostAlloc follows a host's allocation: its procs count against the
// subscriptions of the allocation it is in now.
func (st *usageState) setHostAlloc(host, alloc string) {
	if st.hostAlloc[host] == alloc {
		return
	}
	if alloc == "" {
		delete(st.hostAlloc, host)
	} else {
		st.hostAlloc[host] = alloc
	}
	for p := range st.byHost[host] {
		if st.shows[p.show].managed {
			for _, a := range []string{p.alloc, alloc} {
				if a != "" {
					st.moved = append(st.moved, MovedHost{Host: host, Show: p.show, Alloc: a})
				}
			}
		}
		st.count(p, -1)
		p.alloc = alloc
		st.count(p, 1)
	}
}

// setLimits installs a new reading of the limits and recounts the running
// procs of each limit's layers.
func (st *usageState) setLimits(ls *limitSet) {
	st.limits = ls
	clear(st.limitOn)
	for layer, lims := range ls.ofLayer {
		if n := st.layerUse[layer].running; n != 0 {
			for _, l := range lims {
				st.limitOn[l] += n
			}
		}
	}
}

// limitSet is one reading of limit_record and layer_limit.
type limitSet struct {
	max     map[string]int64    // pk_limit_record -> int_max_value
	ofLayer map[string][]string // pk_layer -> its limits
}

// apply applies a change of a usage or caps table. mark receives each
// deleted proc of a managed show.
func (st *usageState) apply(c *cdc.Change, mark func(ReleasedProc)) error {
	spec := tableByName[c.Rel.Name]
	key, err := keyOf(c, spec.cols[0])
	if err != nil {
		return &malformed{table: spec.name, err: err}
	}
	del := c.Op == cdc.Delete
	rd := rowReader{rel: c.Rel, t: c.New}
	bad := func() error {
		if rd.err != nil {
			return &malformed{table: spec.name, key: key, err: rd.err}
		}
		return nil
	}
	switch spec.name {
	case "show":
		if del {
			delete(st.shows, key)
			return nil
		}
		row := st.shows[key]
		rd.bool("b_active", &row.active)
		rd.bool("b_scheduler_managed", &row.managed)
		if err := bad(); err != nil {
			return err
		}
		st.shows[key] = row
	case "subscription":
		return st.applySub(key, del, &rd, bad)
	case "folder_resource":
		return st.applyCap(key, del, &rd, "pk_folder", st.folderRes, st.folderCap, bad)
	case "job_resource":
		old, had := st.jobRes[key]
		if err := st.applyCap(key, del, &rd, "pk_job", st.jobRes, st.jobCap, bad); err != nil {
			return err
		}
		if row, ok := st.jobRes[key]; had && ok && (row.maxCores != old.maxCores || row.maxGPUs != old.maxGPUs) {
			st.capped = append(st.capped, CounterRows{Job: row.owner})
		}
	case "job":
		if del {
			delete(st.jobs, key)
			return nil
		}
		row := st.jobs[key]
		rd.str("pk_show", &row.show)
		rd.str("pk_folder", &row.folder)
		rd.str("pk_dept", &row.dept)
		if err := bad(); err != nil {
			return err
		}
		st.jobs[key] = row
		// A job moved to another folder takes its procs' usage along.
		for p := range st.byJob[key] {
			if p.folder != row.folder {
				st.count(p, -1)
				p.folder = row.folder
				st.count(p, 1)
			}
		}
	case "layer":
		if del {
			delete(st.layers, key)
			return nil
		}
		job := st.layers[key]
		rd.str("pk_job", &job)
		if err := bad(); err != nil {
			return err
		}
		st.layers[key] = job
	case "proc":
		return st.applyProc(key, c, &rd, bad, mark)
	}
	return nil
}

// applySub applies a change of a subscription row; a changed burst is a
// changed cap for the counters.
func (st *usageState) applySub(key string, del bool, rd *rowReader, bad func() error) error {
	old, had := st.subs[key]
	if had && st.subOf[subKey{old.show, old.alloc}] == key {
		delete(st.subOf, subKey{old.show, old.alloc})
	}
	if del {
		delete(st.subs, key)
		return nil
	}
	row := old
	rd.str("pk_show", &row.show)
	rd.str("pk_alloc", &row.alloc)
	rd.int("int_size", &row.size)
	rd.int("int_burst", &row.burst)
	if err := bad(); err != nil {
		if had {
			st.subOf[subKey{old.show, old.alloc}] = key
		}
		return err
	}
	st.subs[key] = row
	st.subOf[subKey{row.show, row.alloc}] = key
	if had && row.burst != old.burst {
		st.capped = append(st.capped, CounterRows{Show: row.show, Alloc: row.alloc})
	}
	return nil
}

func (st *usageState) applyCap(key string, del bool, rd *rowReader, ownerCol string, rows map[string]capRow,
	capOf map[string]string, bad func() error) error {
	old, had := rows[key]
	if had && capOf[old.owner] == key {
		delete(capOf, old.owner)
	}
	if del {
		delete(rows, key)
		return nil
	}
	row := old
	rd.str(ownerCol, &row.owner)
	rd.int("int_max_cores", &row.maxCores)
	rd.int("int_max_gpus", &row.maxGPUs)
	if err := bad(); err != nil {
		if had {
			capOf[old.owner] = key
		}
		return err
	}
	rows[key] = row
	capOf[row.owner] = key
	return nil
}

func (st *usageState) applyProc(key string, c *cdc.Change, rd *rowReader, bad func() error,
	mark func(ReleasedProc)) error {
	old := st.procs[key]
	if c.Op == cdc.Delete {
		if old == nil {
			return nil
		}
		st.count(old, -1)
		unlink(st.byHost, old.host, old)
		unlink(st.byJob, old.job, old)
		delete(st.procs, key)
		if mark != nil && st.shows[old.show].managed {
			mark(st.releasedProc(key, old))
		}
		return nil
	}
	p := procRec{}
	if old != nil {
		p = *old
	}
	rd.str("pk_host", &p.host)
	rd.str("pk_show", &p.show)
	rd.str("pk_layer", &p.layer)
	rd.str("pk_job", &p.job)
	rd.str("pk_frame", &p.frame)
	rd.int("int_cores_reserved", &p.cores)
	rd.int("int_gpus_reserved", &p.gpus)
	if err := bad(); err != nil {
		return err
	}
	if p.job == "" {
		p.job = st.layers[p.layer]
	}
	p.alloc, p.folder = st.hostAlloc[p.host], st.jobs[p.job].folder
	if old != nil {
		if *old == p {
			return nil // a host report touched columns the cache does not read
		}
		st.count(old, -1)
		unlink(st.byHost, old.host, old)
		unlink(st.byJob, old.job, old)
		*old = p
	} else {
		old = &p
		st.procs[key] = old
	}
	link(st.byHost, old.host, old)
	link(st.byJob, old.job, old)
	st.count(old, 1)
	return nil
}
