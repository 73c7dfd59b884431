package cache

import (
	"maps"
	"slices"
	"time"

	"github.com/cuesched/cuesched/match"
)

// What a poll (cdc.Poller) learns by comparing the state it loaded with the
// one it replaces, as the stream learns it from the changes it applies.

// changesSince is drainChanges for a state loaded whole that replaces old:
// only the hosts whose replicated capacity grew since old, which became
// offered, or which reported again after silence (pinged before cutoff in
// old, not in st) count as grown, and the clusters may have changed only if
// hosts, allocations, facilities or tags did.
func (st *hostState) changesSince(old *hostState, cutoff time.Time) (grown []match.Host, topo bool) {
	for id := range st.grown {
		rec, o := st.hosts[id], old.hosts[id]
		if rec == nil {
			continue
		}
		if o == nil || !o.inTrees || grewFrom(o.base, rec.base) || o.ping.Before(cutoff) && !rec.ping.Before(cutoff) {
			grown = append(grown, rec.h)
		}
	}
	clear(st.grown)
	st.topo = false
	topo = len(st.hosts) != len(old.hosts) || !maps.Equal(st.allocs, old.allocs)
	for id, rec := range st.hosts {
		if topo {
			break
		}
		o := old.hosts[id]
		topo = o == nil || o.h.Facility != rec.h.Facility || o.h.Alloc != rec.h.Alloc ||
			!slices.Equal(o.h.Tags, rec.h.Tags)
	}
	return grown, topo
}

func grewFrom(a, b match.Resources) bool {
	return b.Cores > a.Cores || b.Mem > a.Mem || b.GPUs > a.GPUs || b.GPUMem > a.GPUMem
}

// released reports, as Apply reports a deleted proc, every proc of a
// managed show that old held and st no longer does.
func (st *usageState) released(old *usageState) []ReleasedProc {
	var out []ReleasedProc
	for id, p := range old.procs {
		if st.procs[id] == nil && old.shows[p.show].managed {
			out = append(out, old.releasedProc(id, p))
		}
	}
	return out
}

// releasedProc is proc id, gone from st, for the counters.
func (st *usageState) releasedProc(id string, p *procRec) ReleasedProc {
	return ReleasedProc{Proc: id, Host: p.host, Rows: CounterRows{Show: p.show, Alloc: p.alloc, Layer: p.layer,
		Job: p.job, Folder: p.folder, Dept: st.jobs[p.job].dept}}
}

// managedShows lists the managed shows.
func (st *usageState) managedShows() []string {
	var out []string
	for id, s := range st.shows {
		if s.managed {
			out = append(out, id)
		}
	}
	return out
}
