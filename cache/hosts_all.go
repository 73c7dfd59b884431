package cache

import (
	"cmp"
	"slices"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// AllHosts visits every host of the facility carrying tag that is UP and
// OPEN, whatever its idle capacity (the index offers only hosts with room),
// in id order, until visit returns false: reservations judge when a busy
// host will have room (match.Running). It copies the hosts first, so visit
// runs without the cache's lock and may read the database.
func (h *Hosts) AllHosts(facility, tag string, visit func(match.Host) bool) {
	h.mu.RLock()
	ix := h.st.index[tagKey{facility, cluster.Normalize(tag)}]
	var out []match.Host
	if ix != nil {
		for _, rec := range h.st.hosts {
			if rec.up && rec.row.lock == "OPEN" && slices.Contains(rec.idxs, ix) {
				out = append(out, rec.h)
			}
		}
	}
	h.mu.RUnlock()
	slices.SortFunc(out, func(a, b match.Host) int { return cmp.Compare(a.ID, b.ID) })
	for _, host := range out {
		if !visit(host) {
			return
		}
	}
}
