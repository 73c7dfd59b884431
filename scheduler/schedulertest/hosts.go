package schedulertest

import (
	"slices"
	"sort"
	"sync"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// Hosts is an in-memory scheduler.Hosts: matchtest's index of the hosts,
// the allocations, and the demand tag pressure was last given.
type Hosts struct {
	*matchtest.Hosts
	ids    []string
	allocs []cluster.Alloc

	mu     sync.Mutex
	demand []match.TagDemand
}

func newHosts(hs []match.Host, allocs []cluster.Alloc) *Hosts {
	f := &Hosts{Hosts: matchtest.NewHosts(hs), allocs: slices.Clone(allocs)}
	for _, h := range hs {
		if !slices.Contains(f.ids, h.ID) {
			f.ids = append(f.ids, h.ID)
		}
	}
	sort.Slice(f.allocs, func(i, j int) bool { return f.allocs[i].ID < f.allocs[j].ID })
	return f
}

// Allocs implements scheduler.Hosts.
func (f *Hosts) Allocs() []cluster.Alloc { return slices.Clone(f.allocs) }

// ClusterKeys implements scheduler.Hosts.
func (f *Hosts) ClusterKeys(k *cluster.Keyer) []cluster.Key {
	var out []cluster.Key
	for _, id := range f.ids {
		h, _ := f.Host(id)
		for _, key := range k.OfHost(h.Facility, h.Alloc, h.Tags) {
			if !slices.Contains(out, key) {
				out = append(out, key)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// SetDemand implements scheduler.Hosts.
func (f *Hosts) SetDemand(ds []match.TagDemand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.demand = slices.Clone(ds)
}

// SetReservations implements scheduler.Hosts: matchtest's index leaves
// out no host for a claim, so it keeps nothing.
func (f *Hosts) SetReservations(*match.ReservationSet) {}

// Demand is what SetDemand was last given.
func (f *Hosts) Demand() []match.TagDemand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.demand)
}

// Idle is a host's idle capacity now.
func (f *Hosts) Idle(hostID string) match.Resources {
	h, _ := f.Host(hostID)
	return h.Idle
}
