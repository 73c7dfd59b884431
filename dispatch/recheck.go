package dispatch

import (
	"fmt"
	"math"
	"time"

	"github.com/cuesched/cuesched/match"
)

// lockedState is what a booking transaction read from the rows it locked:
// the values its re-check compares every placement against.
type lockedState struct {
	hosts       map[string]lockedHost  // by pk_host
	frames      map[string]lockedFrame // by pk_frame
	subs        map[showAlloc]subRow
	jobs        map[string]capRow // job_resource by pk_job
	folders     map[string]capRow // folder_resource by pk_folder
	limits      map[string]limitRow
	layerLimits map[string][]string // pk_layer -> pk_limit_record
	// reserved are the reservations of the batch's hosts (migration 0014),
	// and now the transaction's time they are judged at.
	reserved map[string]reservedHost
	now      time.Time
}

// reservedHost is a host's reservation: for which layer, from when (zero:
// unknown).
type reservedHost struct {
	layer, layerName string
	start, made      time.Time
}

type showAlloc struct{ show, alloc string }

type showDept struct{ show, dept string }

type lockedHost struct {
	name, alloc string
	lock        string // str_lock_state
	state       string // host_stat.str_state
	idle        match.Resources
}

type lockedFrame struct {
	layer, job string
	state      string
	version    *int32 // NULL never matches
	eligible   time.Time
	startOK    bool // layer.ts_start_after NULL or past
	jobState   string
	paused     bool
	showOK     bool // managed and active
	show       string
	showName   string
	folder     string
	dept       string
}

type subRow struct{ cores, burst int64 }

type capRow struct{ cores, maxCores, gpus, maxGPUs int64 }

// cap is the row as match's cap rules read it, with the batch's use so far.
func (r capRow) cap(use match.Resources) match.Cap {
	return match.Cap{Cores: r.cores + use.Cores, MaxCores: r.maxCores, GPUs: r.gpus + use.GPUs, MaxGPUs: r.maxGPUs}
}

type limitRow struct{ running, max int64 }

// keptPlacement is a placement that passed the re-check, with what its
// writes need from the locked rows.
type keptPlacement struct {
	p        match.Placement
	procID   string
	version  int32 // frame.int_version as read; the booking writes version+1
	hostName string
	alloc    string
	showName string
	eligible time.Time
	cluster  int32 // whose batch it came in: the outbox row's cluster
}

func newLockedState() *lockedState {
	return &lockedState{hosts: map[string]lockedHost{}, frames: map[string]lockedFrame{}, subs: map[showAlloc]subRow{},
		jobs: map[string]capRow{}, folders: map[string]capRow{}, limits: map[string]limitRow{},
		layerLimits: map[string][]string{}, reserved: map[string]reservedHost{}}
}

// recheck decides, in order, which placements still fit the locked values,
// adding each kept placement's use to the running sums the next ones are
// checked against, exactly as the guard triggers will see the writes. It
// drops everything else with its reason. A host allowed() refuses is
// dropped as well.
func recheck(ps []match.Placement, st *lockedState, allowed func(string) bool) ([]keptPlacement, []Drop) {
	hostUse := map[string]match.Resources{}
	subUse := map[showAlloc]int64{}
	jobUse := map[string]match.Resources{}
	folderUse := map[string]match.Resources{}
	limitUse := map[string]int64{}
	kept := make([]keptPlacement, 0, len(ps))
	var drops []Drop

	check := func(p match.Placement) (DropReason, string) {
		l, sz := p.Layer, p.Size
		switch {
		case l == nil:
			return DropBadPlacement, "no layer"
		case sz.Cores <= 0 || sz.Cores > math.MaxInt32 || sz.GPUs < 0 || sz.GPUs > math.MaxInt32 || sz.Mem < 0 || sz.GPUMem < 0:
			return DropBadPlacement, fmt.Sprintf("size %+v", sz)
		}
		f, ok := st.frames[p.Frame.ID]
		switch {
		case !ok:
			return DropFrameGone, ""
		case f.layer != l.ID || f.job != l.JobID:
			return DropBadPlacement, fmt.Sprintf("frame of layer %s, placed as layer %s", f.layer, l.ID)
		case f.state != "WAITING" || f.version == nil || *f.version != p.Frame.Version:
			v := "NULL"
			if f.version != nil {
				v = fmt.Sprint(*f.version)
			}
			return DropFrameChanged, fmt.Sprintf("%s at version %s, matched at %d", f.state, v, p.Frame.Version)
		case !f.showOK:
			return DropShowUnmanaged, f.showName
		case f.jobState != "PENDING":
			return DropJobNotPending, f.jobState
		case f.paused:
			return DropJobPaused, ""
		case !f.startOK:
			return DropStartAfter, ""
		case f.show != l.ShowID || f.folder != l.FolderID || f.dept != l.DeptID:
			return DropJobMoved, fmt.Sprintf("show %s folder %s dept %s", f.show, f.folder, f.dept)
		}
		h, ok := st.hosts[p.Host.ID]
		switch {
		case !ok:
			return DropHostGone, ""
		case h.lock != "OPEN":
			return DropHostLocked, h.lock
		case h.state != "UP":
			return DropHostDown, h.state
		case h.alloc != p.Host.Alloc:
			return DropHostMoved, h.alloc
		case allowed != nil && !allowed(h.name):
			return DropHostBreaker, h.name
		}
		if free := h.idle.Sub(hostUse[p.Host.ID]); !free.Covers(sz) {
			return DropHostCapacity, fmt.Sprintf("%s has %+v idle, needs %+v", h.name, free, sz)
		}
		if r, ok := st.reserved[p.Host.ID]; ok && r.layer != l.ID {
			// Another layer's frame backfills only when it is expected to
			// end before the reservation starts (match.Backfill), judged
			// at the transaction's time.
			resv := match.Reservation{Layer: r.layer, LayerName: r.layerName, Host: p.Host.ID, HostName: h.name,
				Start: r.start, Made: r.made}
			if ok, why := match.Backfill(l, &resv, st.now); !ok && !match.Expired(&resv, st.now) {
				return DropReserved, why
			}
		}
		// The caps are match's rules (Cuebot's guards and the folder cap), so
		// the re-check drops for a cap only what matching could not see.
		sa := showAlloc{f.show, h.alloc}
		s, ok := st.subs[sa]
		switch {
		case !ok:
			return DropNoSubscription, ""
		case !match.BurstAllows(match.Subscription{Burst: s.burst, Cores: s.cores + subUse[sa]}, true, sz.Cores):
			return DropBurst, fmt.Sprintf("%d+%d+%d cores over burst %d", s.cores, subUse[sa], sz.Cores, s.burst)
		}
		j, ok := st.jobs[f.job]
		if !ok {
			return DropFrameGone, "no job_resource row"
		}
		if u := jobUse[f.job]; !match.JobAllows(j.cap(u), sz) {
			return DropJobCap, fmt.Sprintf("%d+%d+%d cores (max %d), %d+%d+%d GPUs (max %d)",
				j.cores, u.Cores, sz.Cores, j.maxCores, j.gpus, u.GPUs, sz.GPUs, j.maxGPUs)
		}
		// A folder without a resource row has no cap (and no counter).
		if fo, ok := st.folders[f.folder]; ok {
			if u := folderUse[f.folder]; !match.FolderAllows(fo.cap(u), sz) {
				return DropFolderCap, fmt.Sprintf("%d+%d+%d cores (max %d), %d+%d+%d GPUs (max %d)",
					fo.cores, u.Cores, sz.Cores, fo.maxCores, fo.gpus, u.GPUs, sz.GPUs, fo.maxGPUs)
			}
		}
		for _, id := range st.layerLimits[f.layer] {
			if lim := st.limits[id]; lim.running+limitUse[id]+1 > lim.max {
				return DropLimit, fmt.Sprintf("limit %s: %d+%d running, max %d", id, lim.running, limitUse[id], lim.max)
			}
		}
		return "", ""
	}

	for _, p := range ps {
		if reason, detail := check(p); reason != "" {
			drops = append(drops, Drop{Placement: p, Reason: reason, Detail: detail})
			continue
		}
		f, h := st.frames[p.Frame.ID], st.hosts[p.Host.ID]
		counted := match.Resources{Cores: p.Size.Cores, GPUs: p.Size.GPUs} // what the counters hold
		hostUse[p.Host.ID] = hostUse[p.Host.ID].Add(p.Size)
		subUse[showAlloc{f.show, h.alloc}] += p.Size.Cores
		jobUse[f.job] = jobUse[f.job].Add(counted)
		folderUse[f.folder] = folderUse[f.folder].Add(counted)
		for _, id := range st.layerLimits[f.layer] {
			limitUse[id]++
		}
		kept = append(kept, keptPlacement{p: p, procID: newUUID(), version: *f.version, hostName: h.name,
			alloc: h.alloc, showName: f.showName, eligible: f.eligible})
	}
	return kept, drops
}
