// Package match decides which waiting frames go to which render hosts.
//
// It is pure: no database, no network and no clock of its own. It reads hosts,
// usage and caps through the small interfaces below (package cache implements
// them; tests use in-memory fakes) and returns placements for package dispatch
// to commit, plus the reason every layer it could not finish is still waiting.
//
// The steps are kept apart in the way Nomad's scheduler keeps them: feasibility
// (rules.go: may this layer run on this host at all), sizing (size.go: how big a
// proc Cuebot would give it), ranking (policy.go: which feasible host is best)
// and selection with fairness (plan.go: which layer draws next).
package match

import "time"

// Resources is an amount of host capacity. Cores are core units (100 = one
// core), memory and GPU memory are KB, GPUs are whole units.
type Resources struct {
	Cores  int64
	Mem    int64
	GPUs   int64
	GPUMem int64
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.Cores + o.Cores, r.Mem + o.Mem, r.GPUs + o.GPUs, r.GPUMem + o.GPUMem}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{r.Cores - o.Cores, r.Mem - o.Mem, r.GPUs - o.GPUs, r.GPUMem - o.GPUMem}
}

// Covers reports whether r is at least o in every resource.
func (r Resources) Covers(o Resources) bool {
	return r.Cores >= o.Cores && r.Mem >= o.Mem && r.GPUs >= o.GPUs && r.GPUMem >= o.GPUMem
}

// ThreadMode is host.int_thread_mode.
type ThreadMode int8

const (
	ThreadAuto     ThreadMode = 0
	ThreadAll      ThreadMode = 1
	ThreadVariable ThreadMode = 2
)

// Host is what matching sees of one bookable render host at the moment it
// looks. The cache offers only hosts that are OPEN, UP and recently pinged;
// the numeric minimums are a rule of this package (rules.go).
type Host struct {
	ID         string // host.pk_host
	Name       string // host.str_name, written to frame.str_host
	Facility   string // pk_facility of the host's allocation
	Alloc      string // host.pk_alloc
	OS         string // host_stat.str_os
	ThreadMode ThreadMode
	Tags       []string // lower-cased host_tag names, sorted
	// Total is host.int_cores, int_mem, int_gpus, int_gpu_mem.
	Total Resources
	// Idle is what may still be booked: host idle cores and GPUs, and the
	// smaller of host idle and reported free memory (and GPU memory), minus
	// whatever is checked out in memory and not yet echoed by the stream.
	Idle Resources
	// MemFree is host_stat.int_mem_free as last reported (Cuebot's 512 MB floor).
	MemFree int64
	// TempFree is host_stat.int_mcp_free (KB), Cuebot's temp-space floor.
	TempFree int64
	// TempTotal is host_stat.int_mcp_total (KB): Cuebot's temp-space floor is
	// a share of the total (rules.go).
	TempTotal int64
	// Ran is the host index's memory of the layers whose frames ran here
	// lately, the most recent first (locality.go); shared, never modified.
	Ran []Ran
}

// Frame is one WAITING frame of a pending layer.
type Frame struct {
	ID      string // frame.pk_frame
	Name    string // frame.str_name
	Version int32  // frame.int_version as read; the booking is guarded by it
	Number  int64  // frame.int_number
}

// Layer is one pending layer with everything placement needs to know about it
// and its job. Frames are its waiting frames in Cuebot's dispatch order;
// matching consumes them from the front.
type Layer struct {
	ID         string // layer.pk_layer
	Name       string
	JobID      string
	JobName    string
	ShowID     string
	ShowName   string // show.str_name: static ownership restricts shows by name
	FolderID   string
	DeptID     string    // job.pk_dept (point is keyed by show x dept)
	Facility   string    // job.pk_facility
	Priority   int64     // job_resource.int_priority
	OS         string    // job.str_os; empty means any
	Tags       []string  // lower-cased, trimmed layer.str_tags split on '|'
	Min        Resources // layer int_cores_min, int_mem_min, int_gpus_min, int_gpu_mem_min
	CoresMax   int64     // layer.int_cores_max; <= 0 means none
	Threadable bool
	Services   []string  // layer.str_services split on ','
	StartAfter time.Time // layer.ts_start_after; zero when NULL
	Limits     []string  // pk_limit_record of the layer's limits
	// Waiting is layer_stat.int_waiting_count when the layer was read: what
	// the layer still wants, beyond the frames a round reads (Frames).
	Waiting int64
	Frames  []Frame
	// History is what its frames used so far (memory.go).
	History History
	// Runs are how long its finished frames ran (reserve.go).
	Runs Runs
}

// Cap is a counter in use against its maximum. A negative max means unlimited.
type Cap struct {
	Cores, MaxCores int64
	GPUs, MaxGPUs   int64
}

// Subscription is a show's share of one allocation.
type Subscription struct {
	Size  int64 // subscription.int_size (core units)
	Burst int64 // subscription.int_burst; <= 0 means nothing may book
	Cores int64 // cores in use
	GPUs  int64
}

// Limit is a limit record: layers linked to it may run while the running
// frames of all its layers stay below Max.
type Limit struct {
	Running int64
	Max     int64
}

// Hosts is the host index matching draws from. Package cache implements it
// over its B-trees; every method is safe for concurrent use.
type Hosts interface {
	// Walk visits the offered hosts of the facility that carry tag and have at
	// least min idle, in ascending (idle cores, idle memory, id) order, until
	// visit returns false. Walk must not be re-entered from visit. With a
	// claim (nil: none), it may leave out hosts the claim refuses (Claim).
	Walk(facility, tag string, min Resources, claim *Claim, visit func(Host) bool)
	// WalkUncontested is Walk without the hosts contested for tag: those
	// carrying another tag whose waiting work can run only on hosts with
	// that tag and needs much of their idle capacity (tag pressure, kept by
	// package cache). skipped reports whether it may have left a host out,
	// so a caller that found nothing walks again with Walk, never waiting
	// while a host fits.
	WalkUncontested(facility, tag string, min Resources, claim *Claim, visit func(Host) bool) (skipped bool)
	// Tagged reports whether any host of the facility carries tag at all,
	// offered or not (a layer whose tags name no host waits for "no-host").
	Tagged(facility, tag string) bool
	// Take checks out r on the host if it is still idle there, re-indexing the
	// host; false when another matcher took it first.
	Take(hostID string, r Resources) bool
	// Return checks back in capacity taken by Take that will not be booked.
	Return(hostID string, r Resources)
}

// Caps is read-only usage and caps. Values are what is committed (as last
// replicated); matching adds what its own round has placed.
type Caps interface {
	Subscription(showID, allocID string) (Subscription, bool)
	Job(jobID string) Cap
	Folder(folderID string) Cap
	Limit(limitID string) (Limit, bool)
}

// Placement is one frame placed on one host with the proc size it will be
// booked with. It is a decision of matching, not yet a booking: dispatch
// commits it or drops it.
type Placement struct {
	Layer *Layer
	Frame Frame
	Host  Host // the host as matching saw it when it placed the frame
	Size  Resources
	// Warm is set when warmth chose Host over one that fit as well
	// (Options.Locality), with the memory that made it warm (Ran).
	Warm Warmth
	Ran  Ran
	// Use says whether Host is reserved (Options.Reservations) and for
	// whom: this layer (honoured) or another (backfilled).
	Use Use
}

// Reason says why a layer still has waiting frames after a round.
type Reason string

const (
	ReasonCapacity   Reason = "capacity"    // no idle capacity on any host the layer may use
	ReasonNoFit      Reason = "no-fit"      // idle capacity exists, of the wrong shape
	ReasonCap        Reason = "cap"         // a cap (burst, job, folder, limit) is reached
	ReasonNoHost     Reason = "no-host"     // its tags name no host at all
	ReasonStartAfter Reason = "start-after" // layer.ts_start_after lies in the future
	ReasonDeferred   Reason = "deferred"    // the round's placement bound came first
)

// Reasons are every Reason, in the order above.
var Reasons = []Reason{ReasonCapacity, ReasonNoFit, ReasonCap, ReasonNoHost, ReasonStartAfter, ReasonDeferred}

// Wait records why one layer kept waiting frames, with a detail such as the
// cap that stopped it or the nearest host.
type Wait struct {
	Layer  *Layer
	Reason Reason
	Detail string
}

// TagDemand is what waiting work that can run only on hosts carrying Tag
// (in Facility) still needs of them: tag pressure's input (the loop sums it,
// the host index judges which tags are contested). Only cores and memory
// count. Foreign marks a tag of work another instance books: its hosts are
// left out while others fit whatever the need, and while the need reaches a
// smaller share of their supply than for a tag of this instance's work
// (package cache).
type TagDemand struct {
	Facility, Tag string
	Need          Resources
	Foreign       bool
}
