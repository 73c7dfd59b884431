package ownership

import (
	"maps"
	"slices"

	"github.com/cuesched/cuesched/cluster"
)

// The leader's decision, without I/O. reconcile (leader.go) reads the
// tables, calls tidy, writes its result, calls decide and writes that, in
// one transaction. The two steps are apart because decide needs the rows of
// the clusters tidy adds: their ids and allocation tags come from the insert.
// The drift check (drifted) and a stopping instance's choice of receivers
// (leaving) are here too.

// tidying is what the leader removes and adds before it assigns.
type tidying struct {
	Dead     []int32 // instances whose session ended: their rows go
	Orphaned int     // clusters the dead owned, unowned from now on
	// Sync: the cluster set was given (SetClusters), so the rows follow it
	// and the allocation tags are refreshed.
	Sync    bool
	Gone    []int32       // cluster rows whose key is not in the set
	Add     []cluster.Key // keys of the set with no row, in key order
	Skipped []cluster.Key // keys of the set that are not valid keys
}

// tidy returns what to remove and add, and the snapshot as it will be once
// that is written, less the rows to add: dead instances gone with their
// handovers, their clusters unowned, clusters gone with their handovers.
// keys is the cluster set, when sync is set.
func tidy(s *snapshot, keys []cluster.Key, sync bool) (*snapshot, tidying) {
	s = s.clone()
	var t tidying
	for _, i := range s.Instances {
		if !i.Live {
			t.Dead = append(t.Dead, i.ID)
		}
	}
	if len(t.Dead) > 0 {
		// What ON DELETE SET NULL (owner) and CASCADE (handover) will do.
		for i := range s.Clusters {
			if slices.Contains(t.Dead, s.Clusters[i].Owner) {
				s.Clusters[i].Owner = 0
				t.Orphaned++
			}
		}
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool {
			return slices.Contains(t.Dead, h.Giver) || slices.Contains(t.Dead, h.Receiver)
		})
		s.Instances = slices.DeleteFunc(s.Instances, func(i instanceRow) bool { return !i.Live })
	}
	if sync {
		t.Sync = true
		t.Gone, t.Add, t.Skipped = clusterChanges(s.Clusters, keys)
		s.Clusters = slices.DeleteFunc(s.Clusters, func(r clusterRow) bool { return slices.Contains(t.Gone, r.ID) })
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return slices.Contains(t.Gone, h.Cluster) })
	}
	return s, t
}

// clusterChanges compares the cluster rows with the set keys: the rows
// whose key is not in it, the keys with no row (in key order) and the keys
// that are not valid.
func clusterChanges(rows []clusterRow, keys []cluster.Key) (gone []int32, add, skipped []cluster.Key) {
	want := map[string]cluster.Key{}
	for _, k := range keys {
		if (k.Kind == cluster.KindAlloc && k.Alloc == "") || (k.Kind != cluster.KindAlloc && k.Kind != cluster.KindTags) {
			skipped = append(skipped, k)
			continue
		}
		want[k.String()] = k
	}
	have := map[string]bool{}
	for _, row := range rows {
		k := row.key().String()
		have[k] = true
		if _, ok := want[k]; !ok {
			gone = append(gone, row.ID)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if !have[name] {
			add = append(add, want[name])
		}
	}
	return gone, add, skipped
}

// memory is what the leader keeps from one decision to the next.
type memory struct {
	balanced  []int32 // the live instances the last rebalance spread clusters over
	unsettled bool    // the last rebalance asked for moves
}

// grant gives a cluster to an instance (To 0: to none) outright, with no
// handover: an unowned cluster, or one whose owner stops.
type grant struct{ Cluster, To int32 }

// decision is what the leader writes to assign the clusters.
type decision struct {
	Live      []int32 // the live instances, sorted
	Rebalance bool    // moves between live instances were looked for
	Grants    []grant
	Cancel    []int32       // clusters whose pending handover is no longer wanted
	Moves     []handoverRow // handovers asked of owners (Receiver 0: nobody may own it)
}

func (d decision) empty() bool { return len(d.Grants) == 0 && len(d.Cancel) == 0 && len(d.Moves) == 0 }

// decide assigns the clusters of s (as tidy left it, with the rows it
// added): unowned clusters go to the least loaded live instance that may
// own them and, when the live instances changed since the last rebalance,
// the last one asked for moves, a handover went stale or force is set, moves
// are asked of the owners (Balance). weights may be nil.
func decide(s *snapshot, weights map[cluster.Key]int64, threshold float64, force bool, mem memory) decision {
	live := s.live()
	d := decision{Live: slices.Sorted(maps.Keys(live))}
	d.Rebalance = force || mem.unsettled || s.staleHandover() || !slices.Equal(d.Live, mem.balanced)
	final := Balance(s.items(live, weights), d.Live, threshold, d.Rebalance)
	for _, row := range s.Clusters {
		to := final[row.ID]
		h, asked := s.handover(row.ID)
		switch {
		case row.Owner == 0:
			if to != 0 {
				d.Grants = append(d.Grants, grant{Cluster: row.ID, To: to})
			}
			if asked {
				d.Cancel = append(d.Cancel, row.ID)
			}
		case to == row.Owner:
			if asked {
				d.Cancel = append(d.Cancel, row.ID)
			}
		case asked && h.Giver == row.Owner && h.Receiver == to:
			// Asked already.
		default:
			d.Moves = append(d.Moves, handoverRow{Cluster: row.ID, Giver: row.Owner, Receiver: to})
		}
	}
	return d
}

// drifted reports whether the weights have drifted so far apart that a
// rebalance is due: the heaviest live instance's work (a pending handover's
// receiver counting as the owner) above trigger x the best an assignment can
// reach (the mean, or the heaviest single cluster when it outweighs the
// mean), and above it by at least least (in the weights' unit, queued
// layers). The rebalance brings
// it down to the threshold, below trigger: hysteresis. The least excess keeps
// a trickle of small jobs from moving clusters at every job: a move costs the
// giver its batch in flight and the receiver a resolution of the cluster's
// outbox and a recompute, far more than booking a few layers where they are.
// nil weights never drift.
func (s *snapshot) drifted(weights map[cluster.Key]int64, trigger float64, least int64) bool {
	live := s.live()
	if weights == nil || len(live) < 2 {
		return false
	}
	load := map[int32]int64{}
	var total, heaviest int64
	for _, it := range s.items(live, weights) {
		if it.Owner != 0 && it.Weight > 0 {
			load[it.Owner] += it.Weight
			total += it.Weight
			heaviest = max(heaviest, it.Weight)
		}
	}
	var top int64
	for _, v := range load {
		top = max(top, v)
	}
	// The best any assignment can do: the mean, or the heaviest cluster
	// when one alone outweighs it (a cluster moves whole).
	best := max(float64(total)/float64(len(live)), float64(heaviest))
	return total > 0 && float64(top) > trigger*best && float64(top)-best >= float64(least)
}

// leaving gives each cluster of an instance that stops to the least loaded
// other live instance that may own it (To 0: none may), moving nothing else.
func leaving(s *snapshot, id int32, weights map[cluster.Key]int64, threshold float64) []grant {
	live := s.live()
	delete(live, id)
	final := Balance(s.items(live, weights), slices.Collect(maps.Keys(live)), threshold, false)
	var out []grant
	for _, row := range s.Clusters {
		if row.Owner == id {
			out = append(out, grant{Cluster: row.ID, To: final[row.ID]})
		}
	}
	return out
}

// staleHandover reports a request whose giver no longer owns its cluster:
// it lost a race with a handover that completed meanwhile, and what it
// meant to do may be undone, so the whole balance is looked at again, as
// after the leader's own moves.
func (s *snapshot) staleHandover() bool {
	for _, row := range s.Clusters {
		if h, ok := s.handover(row.ID); ok && h.Giver != row.Owner {
			return true
		}
	}
	return false
}

// after is s as it is once d is written.
func (s *snapshot) after(d decision) *snapshot {
	s = s.clone()
	for _, g := range d.Grants {
		for i := range s.Clusters {
			if s.Clusters[i].ID == g.Cluster {
				s.Clusters[i].Owner, s.Clusters[i].Epoch = g.To, s.Clusters[i].Epoch+1
			}
		}
	}
	s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return slices.Contains(d.Cancel, h.Cluster) })
	for _, m := range d.Moves {
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return h.Cluster == m.Cluster })
		s.Handovers = append(s.Handovers, m)
	}
	return s
}

// after is what the leader remembers once d is written.
func (m memory) after(d decision) memory {
	if !d.Rebalance {
		return m
	}
	// Once the moves are done, check the balance again with what they
	// left: a move may have raced a completing handover.
	return memory{balanced: d.Live, unsettled: len(d.Moves) > 0}
}

func (s *snapshot) clone() *snapshot {
	return &snapshot{Buckets: s.Buckets, Instances: slices.Clone(s.Instances),
		Clusters: slices.Clone(s.Clusters), Handovers: slices.Clone(s.Handovers)}
}
