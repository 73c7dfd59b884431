package cache

import (
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// SetAlloc files an allocation as a replicated alloc row would, without
// the stream: the simulator (package sim) keeps its farm in this index, so
// matching there walks the index `cuesched run` walks (its order, Cuebot's
// minimums, tag pressure).
func (h *Hosts) SetAlloc(a cluster.Alloc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.allocs[a.ID] = allocRow{facility: a.Facility, tag: a.Tag}
	h.st.topo = true
}

// SetHost files a host as its replicated rows would have it, without the
// stream (SetAlloc): UP, OPEN and never stale; host.Idle is its host row's
// idle columns and host.MemFree its reported free memory (the offered idle
// memory is the smaller), host.Tags its host_tag rows and host.Alloc an
// allocation given to SetAlloc. A host set again takes the new values.
// grown reports whether its capacity grew or it became offered (what the
// replica reports to the loop's HostsChanged).
func (h *Hosts) SetHost(host match.Host) (grown bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.st
	rec := st.hosts[host.ID]
	if rec == nil {
		rec = &hostRec{id: host.ID}
		st.hosts[host.ID] = rec
		st.markNew(rec)
	}
	rec.row = hostRow{alloc: host.Alloc, name: host.Name, lock: "OPEN",
		cores: host.Total.Cores, coresIdle: host.Idle.Cores, mem: host.Total.Mem, memIdle: host.Idle.Mem,
		gpus: host.Total.GPUs, gpusIdle: host.Idle.GPUs, gpuMem: host.Total.GPUMem, gpuMemIdle: host.Idle.GPUMem,
		threadMode: int64(host.ThreadMode)}
	stat := st.statOf[host.ID]
	if stat == nil {
		stat = &statRow{host: host.ID}
		st.statOf[host.ID] = stat
	}
	stat.memFree, stat.mcpFree, stat.mcpTotal = host.MemFree, host.TempFree, host.TempTotal
	stat.state, stat.os, stat.gpuMemFree = "UP", host.OS, host.Idle.GPUMem
	tags := st.hostTags[host.ID]
	if tags == nil {
		tags = map[string]int{}
		st.hostTags[host.ID] = tags
	}
	clear(tags)
	for _, t := range host.Tags {
		tags[cluster.Normalize(t)] = 1
	}
	st.refresh(host.ID, time.Time{}) // never stale
	_, grown = st.grown[host.ID]
	delete(st.grown, host.ID)
	return grown
}
