package ownership

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/cuesched/cuesched/cluster"
)

// The leader's decision without a database: the tables as the leader read
// them go in, what it writes comes out.

// inst is a live instance's row; dead marks one whose session ended.
func inst(id int32, r ...restriction) instanceRow {
	row := instanceRow{ID: id, Live: true}
	if len(r) > 0 {
		row.Static = r[0]
	}
	return row
}

func dead(id int32) instanceRow { return instanceRow{ID: id} }

// tagRow is a tag-bucket cluster of facility F, bucket id, at epoch 1.
func tagRow(id, owner int32) clusterRow {
	return clusterRow{ID: id, Kind: int(cluster.KindTags), Facility: "F", Bucket: int(id), Owner: owner, Epoch: 1}
}

// rows gives tag clusters 1..len(owners) their owners.
func rows(owners ...int32) []clusterRow {
	out := make([]clusterRow, len(owners))
	for i, o := range owners {
		out[i] = tagRow(int32(i+1), o)
	}
	return out
}

func snap(insts []instanceRow, clusters []clusterRow, handovers ...handoverRow) *snapshot {
	return &snapshot{Buckets: 16, Instances: insts, Clusters: clusters, Handovers: handovers}
}

func TestTidy(t *testing.T) {
	alloc := func(a string) cluster.Key { return cluster.Key{Kind: cluster.KindAlloc, Facility: "F", Alloc: a} }
	bucket := func(b int) cluster.Key { return cluster.Key{Kind: cluster.KindTags, Facility: "F", Bucket: b} }
	for _, tc := range []struct {
		name  string
		s     *snapshot
		keys  []cluster.Key
		sync  bool
		want  tidying
		after *snapshot
	}{{
		name: "a dead instance's row goes, its clusters are unowned, handovers to or from it dropped",
		s: snap([]instanceRow{inst(1), dead(2), inst(3)}, rows(2, 1, 2, 3),
			handoverRow{Cluster: 2, Giver: 1, Receiver: 2}, handoverRow{Cluster: 4, Giver: 3, Receiver: 1}),
		want:  tidying{Dead: []int32{2}, Orphaned: 2},
		after: snap([]instanceRow{inst(1), inst(3)}, rows(0, 1, 0, 3), handoverRow{Cluster: 4, Giver: 3, Receiver: 1}),
	}, {
		name: "no cluster set given yet: the rows stay as found",
		s:    snap([]instanceRow{inst(1)}, rows(1, 1)),
		keys: []cluster.Key{bucket(9)},
		want: tidying{}, after: snap([]instanceRow{inst(1)}, rows(1, 1)),
	}, {
		name: "the cluster set: rows of keys gone go with their handovers, new keys are added in key order, invalid keys skipped",
		s:    snap([]instanceRow{inst(1), inst(3)}, rows(1, 1), handoverRow{Cluster: 1, Giver: 1, Receiver: 3}),
		keys: []cluster.Key{bucket(2), bucket(3), alloc(""), {Kind: 7, Facility: "F"}, alloc("x"), bucket(3)},
		sync: true,
		want: tidying{Sync: true, Gone: []int32{1}, Add: []cluster.Key{alloc("x"), bucket(3)},
			Skipped: []cluster.Key{alloc(""), {Kind: 7, Facility: "F"}}},
		after: snap([]instanceRow{inst(1), inst(3)}, []clusterRow{tagRow(2, 1)}),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.s.clone()
			after, got := tidy(tc.s, tc.keys, tc.sync)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("tidying\n got %+v\nwant %+v", got, tc.want)
			}
			if !reflect.DeepEqual(nilEmpty(after), tc.after) {
				t.Errorf("snapshot after\n got %+v\nwant %+v", after, tc.after)
			}
			if !reflect.DeepEqual(tc.s, before) {
				t.Errorf("tidy changed its input: %+v", tc.s)
			}
		})
	}
}

// nilEmpty makes the empty slices of s nil, as the cases write them.
func nilEmpty(s *snapshot) *snapshot {
	if len(s.Instances) == 0 {
		s.Instances = nil
	}
	if len(s.Clusters) == 0 {
		s.Clusters = nil
	}
	if len(s.Handovers) == 0 {
		s.Handovers = nil
	}
	return s
}

// inF is tagRow in facility f.
func inF(id int32, f string, owner int32) clusterRow {
	r := tagRow(id, owner)
	r.Facility = f
	return r
}

func facility(f string) restriction { return restriction{Facility: f} }

// decideCases are the rules of the leader's decision, one a case, at the
// default threshold (1.25).
var decideCases = []struct {
	name    string
	s       *snapshot
	weights map[int32]int64 // by cluster id
	force   bool
	mem     memory
	want    decision
}{{
	name: "a new farm: unowned clusters spread, counts within one",
	s:    snap([]instanceRow{inst(1), inst(2), inst(3)}, rows(0, 0, 0, 0, 0, 0, 0)),
	want: decision{Live: []int32{1, 2, 3}, Rebalance: true,
		Grants: []grant{{1, 1}, {2, 2}, {3, 3}, {4, 1}, {5, 2}, {6, 3}, {7, 1}}},
}, {
	name: "nothing changed: nothing written",
	s:    snap([]instanceRow{inst(1), inst(2)}, rows(1, 2, 1, 2)),
	mem:  memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}},
}, {
	name:  "forced on a balanced farm: nothing moves",
	s:     snap([]instanceRow{inst(1), inst(2)}, rows(1, 2, 1, 2)),
	force: true, mem: memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Rebalance: true},
}, {
	name: "an instance joins: it gets its share, nothing else moves",
	s:    snap([]instanceRow{inst(1), inst(2), inst(3), inst(4)}, rows(1, 2, 3, 1, 2, 3, 1, 2, 3)),
	mem:  memory{balanced: []int32{1, 2, 3}},
	want: decision{Live: []int32{1, 2, 3, 4}, Rebalance: true,
		Moves: []handoverRow{{Cluster: 1, Giver: 1, Receiver: 4}, {Cluster: 2, Giver: 2, Receiver: 4}}},
}, {
	name: "the same instances, lopsided: only the unowned cluster is placed",
	s:    snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 1, 1, 0)),
	mem:  memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Grants: []grant{{5, 2}}},
}, {
	name: "the last rebalance asked for moves: the balance is looked at again",
	s:    snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 1, 1, 0)),
	mem:  memory{balanced: []int32{1, 2}, unsettled: true},
	want: decision{Live: []int32{1, 2}, Rebalance: true, Grants: []grant{{5, 2}},
		Moves: []handoverRow{{Cluster: 1, Giver: 1, Receiver: 2}}},
}, {
	name:  "a handover under way counts for its receiver and is not asked again",
	s:     snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 1, 2), handoverRow{Cluster: 1, Giver: 1, Receiver: 2}),
	force: true, mem: memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Rebalance: true},
}, {
	name: "a stale request (its giver no longer owns the cluster) is cancelled and the balance looked at again",
	s:    snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 2, 2), handoverRow{Cluster: 1, Giver: 2, Receiver: 1}),
	mem:  memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Rebalance: true, Cancel: []int32{1}},
}, {
	name:    "a request the weights no longer want is cancelled",
	s:       snap([]instanceRow{inst(1), inst(2)}, rows(1, 2, 1), handoverRow{Cluster: 1, Giver: 1, Receiver: 2}),
	weights: map[int32]int64{1: 10, 2: 100},
	force:   true, mem: memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Rebalance: true, Cancel: []int32{1}},
}, {
	name: "static: a cluster goes only to an instance that may own it, or to nobody",
	s: snap([]instanceRow{inst(1, facility("F")), inst(2, facility("G"))},
		[]clusterRow{inF(1, "F", 0), inF(2, "G", 0), inF(3, "H", 0), inF(4, "F", 2), inF(5, "H", 1)}),
	mem: memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Grants: []grant{{1, 1}, {2, 2}},
		Moves: []handoverRow{{Cluster: 4, Giver: 2, Receiver: 1}, {Cluster: 5, Giver: 1, Receiver: 0}}},
}, {
	name:    "weights: the heaviest instance's work is brought within the threshold",
	s:       snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 1, 1)),
	weights: map[int32]int64{1: 40, 2: 30, 3: 20, 4: 10},
	force:   true, mem: memory{balanced: []int32{1, 2}},
	want: decision{Live: []int32{1, 2}, Rebalance: true, Moves: []handoverRow{{Cluster: 1, Giver: 1, Receiver: 2}}},
}}

func TestDecide(t *testing.T) {
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			w := map[cluster.Key]int64{}
			for _, row := range tc.s.Clusters {
				w[row.key()] = tc.weights[row.ID]
			}
			before := tc.s.clone()
			if got := decide(tc.s, w, 1.25, tc.force, tc.mem); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
			if !reflect.DeepEqual(tc.s, before) {
				t.Errorf("decide changed its input: %+v", tc.s)
			}
		})
	}
}

// A dead instance's clusters go to the live ones, and nothing else moves.
func TestDeadInstanceTakenOver(t *testing.T) {
	s := snap([]instanceRow{inst(1), inst(2), dead(3)}, rows(1, 2, 3, 1, 2, 3))
	s, td := tidy(s, nil, false)
	if !slices.Equal(td.Dead, []int32{3}) || td.Orphaned != 2 {
		t.Fatalf("tidying %+v", td)
	}
	d := decide(s, nil, 1.25, false, memory{balanced: []int32{1, 2, 3}})
	want := decision{Live: []int32{1, 2}, Rebalance: true, Grants: []grant{{3, 1}, {6, 2}}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("\n got %+v\nwant %+v", d, want)
	}
	// What is written is kept for the drift check: the grants bump the epoch.
	after := s.after(d)
	for _, row := range after.Clusters {
		if row.Owner == 0 || (row.ID == 3 || row.ID == 6) != (row.Epoch == 2) {
			t.Errorf("after the decision: %+v", row)
		}
	}
	if m := (memory{}).after(d); !slices.Equal(m.balanced, []int32{1, 2}) || m.unsettled {
		t.Errorf("memory after %+v", m)
	}
}

func FuzzDecide(f *testing.F) {
	f.Add(uint64(1), uint8(9), uint8(3), false, false)
	f.Add(uint64(2), uint8(30), uint8(5), true, true)
	f.Add(uint64(3), uint8(0), uint8(0), true, false)
	f.Fuzz(func(t *testing.T, seed uint64, n, k uint8, restricted, weighted bool) {
		r := rand.New(rand.NewPCG(seed, 0))
		s, keys, w := randomTables(r, int(n%40), int(k%6), restricted, weighted)
		s, td := tidy(s, keys, true)
		s = inserted(s, td.Add)
		for _, row := range s.Clusters {
			if _, ok := s.live()[row.Owner]; row.Owner != 0 && !ok {
				t.Fatalf("cluster %d owned by %d, not a live instance", row.ID, row.Owner)
			}
		}
		mem := memory{balanced: randomIDs(r, 5), unsettled: r.IntN(4) == 0}
		d := decide(s, w, 1.25, r.IntN(3) == 0, mem)
		target := checkDecision(t, s, d)
		if d.Rebalance && !restricted {
			checkBalanced(t, s, w, d, target)
		}
		// Deciding again on what was written writes nothing.
		again := decide(s.after(d), w, 1.25, d.Rebalance, memory{balanced: d.Live})
		if !again.empty() {
			t.Fatalf("a second decision on the first one's result: %+v", again)
		}
	})
}

// randomTables makes tables of up to n clusters, some owned by instances
// 1..6 of which k are alive, some with a pending handover, and the cluster
// set (mostly the same keys, a few gone, a few new).
func randomTables(r *rand.Rand, n, k int, restricted, weighted bool) (*snapshot, []cluster.Key, map[cluster.Key]int64) {
	facilities := []string{"F", "G", "H"}
	s := &snapshot{Buckets: 4}
	for id := int32(1); id <= 6; id++ {
		row := instanceRow{ID: id, Live: int(id) <= k}
		if restricted && r.IntN(2) == 0 {
			row.Static.Facility = facilities[r.IntN(2)]
		}
		s.Instances = append(s.Instances, row)
	}
	var keys []cluster.Key
	w := map[cluster.Key]int64{}
	for id := int32(1); id <= int32(n); id++ {
		row := tagRow(id, int32(r.IntN(7)))
		row.Facility = facilities[r.IntN(3)]
		if r.IntN(8) > 0 {
			s.Clusters = append(s.Clusters, row)
			if r.IntN(5) == 0 {
				s.Handovers = append(s.Handovers, handoverRow{Cluster: id, Giver: int32(r.IntN(7)), Receiver: int32(r.IntN(7))})
			}
		}
		if r.IntN(8) > 0 {
			keys = append(keys, row.key())
		}
		if weighted {
			w[row.key()] = int64(r.IntN(50))
		}
	}
	return s, keys, w
}

func randomIDs(r *rand.Rand, n int) []int32 {
	var out []int32
	for id := int32(1); id <= 6 && len(out) < n; id++ {
		if r.IntN(2) == 0 {
			out = append(out, id)
		}
	}
	return out
}

// inserted adds the rows the database would insert for keys: unowned, at
// epoch 0, with new ids.
func inserted(s *snapshot, keys []cluster.Key) *snapshot {
	var next int32
	for _, row := range s.Clusters {
		next = max(next, row.ID)
	}
	for _, k := range keys {
		next++
		s.Clusters = append(s.Clusters, clusterRow{ID: next, Kind: int(k.Kind), Facility: k.Facility, Bucket: k.Bucket})
	}
	return s
}

// checkDecision checks what any decision must hold and returns every
// cluster's owner once it is carried out (handovers done).
func checkDecision(t *testing.T, s *snapshot, d decision) map[int32]int32 {
	t.Helper()
	live := s.live()
	target := map[int32]int32{}
	for _, row := range s.Clusters {
		target[row.ID] = row.Owner
		if h, ok := s.handover(row.ID); ok && h.Giver == row.Owner && !slices.Contains(d.Cancel, row.ID) {
			target[row.ID] = h.Receiver
		}
	}
	decided := map[int32]bool{}
	for _, g := range d.Grants {
		if decided[g.Cluster] || target[g.Cluster] != 0 {
			t.Fatalf("grant %+v: decided twice, or the cluster is owned", g)
		}
		decided[g.Cluster], target[g.Cluster] = true, g.To
	}
	for _, m := range d.Moves {
		row := s.Clusters[slices.IndexFunc(s.Clusters, func(c clusterRow) bool { return c.ID == m.Cluster })]
		if decided[m.Cluster] || row.Owner != m.Giver || m.Giver == 0 {
			t.Fatalf("move %+v: decided twice, or not asked of the owner (%d)", m, row.Owner)
		}
		decided[m.Cluster], target[m.Cluster] = true, m.Receiver
	}
	for _, c := range d.Cancel {
		if _, ok := s.handover(c); !ok {
			t.Fatalf("cancelled cluster %d has no handover", c)
		}
	}
	for _, row := range s.Clusters {
		to, mayOwn := target[row.ID], false
		for _, in := range live {
			mayOwn = mayOwn || in.Static.covers(row.info(), s.Buckets)
		}
		switch {
		case to == 0 && mayOwn:
			t.Fatalf("cluster %d left unowned though a live instance may own it", row.ID)
		case to != 0 && !covered(s, to, row):
			t.Fatalf("cluster %d goes to %d, not a live instance that may own it", row.ID, to)
		}
	}
	return target
}

func covered(s *snapshot, inst int32, row clusterRow) bool {
	in, ok := s.live()[inst]
	return ok && in.Static.covers(row.info(), s.Buckets)
}

// checkBalanced checks the rule Balance keeps, on the owners once the
// decision is carried out: with every cluster weighing the same, counts
// within one; otherwise the heaviest instance (the first by id) within the
// threshold x the mean, or holding no busy cluster whose move to another
// instance would lower it.
func checkBalanced(t *testing.T, s *snapshot, w map[cluster.Key]int64, d decision, target map[int32]int32) {
	t.Helper()
	if len(d.Live) < 2 {
		return
	}
	load, count := map[int32]int64{}, map[int32]int{}
	for _, id := range d.Live {
		load[id], count[id] = 0, 0
	}
	even := true
	for _, row := range s.Clusters {
		load[target[row.ID]] += w[row.key()]
		count[target[row.ID]]++
		even = even && w[row.key()] == w[s.Clusters[0].key()]
	}
	if even {
		if spread(count) > 1 {
			t.Fatalf("every cluster weighs the same, counts %v", count)
		}
		return
	}
	top, total := d.Live[0], int64(0)
	for _, id := range d.Live {
		total += load[id]
		if load[id] > load[top] {
			top = id
		}
	}
	if float64(load[top]) <= 1.25*float64(total)/float64(len(d.Live)) {
		return
	}
	for _, row := range s.Clusters {
		c := w[row.key()]
		for _, p := range d.Live {
			if target[row.ID] == top && c > 0 && p != top && load[p]+c < load[top] {
				t.Fatalf("instance %d over the bound (loads %v) though cluster %d (%d) could move to %d",
					top, load, row.ID, c, p)
			}
		}
	}
}

func TestDrifted(t *testing.T) {
	two := []instanceRow{inst(1), inst(2)}
	for _, tc := range []struct {
		name    string
		s       *snapshot
		weights map[int32]int64 // by cluster id; nil: no weights
		want    bool
	}{
		{"work far apart", snap(two, rows(1, 1, 2)), map[int32]int64{1: 50, 2: 50, 3: 10}, true},
		{"work within the trigger", snap(two, rows(1, 1, 2)), map[int32]int64{1: 30, 2: 30, 3: 40}, false},
		{"a handover under way counts for its receiver", snap(two, rows(1, 1, 2), handoverRow{Cluster: 1, Giver: 1, Receiver: 2}),
			map[int32]int64{1: 50, 2: 50, 3: 10}, false},
		{"one live instance", snap([]instanceRow{inst(1), dead(2)}, rows(1, 1, 2)), map[int32]int64{1: 50, 2: 50, 3: 10}, false},
		{"no work", snap(two, rows(1, 1, 2)), map[int32]int64{}, false},
		{"no weights", snap(two, rows(1, 1, 2)), nil, false},
		// A trickle of small jobs puts one or two layers on one instance:
		// far apart as ratios, but a move would cost more than it balances
		// (the demo's idle-farm probe saw clusters flap at every job).
		{"a trickle: one layer", snap(two, rows(1, 1, 2)), map[int32]int64{1: 1}, false},
		{"a trickle: a few layers", snap(two, rows(1, 1, 2)), map[int32]int64{1: 9, 2: 9, 3: 1}, false},
		{"just over the least excess", snap(two, rows(1, 1, 2)), map[int32]int64{1: 17, 2: 17}, true},
		// One cluster heavier than the mean (work none of its hosts can
		// take stays queued): no assignment brings its owner below it, so
		// moves would only shuffle the small clusters around it (the demo's
		// idle probe saw two moves at every job beside such a bucket).
		{"one cluster heavier than the mean", snap(two, rows(1, 1, 2)), map[int32]int64{1: 45, 3: 1}, false},
		{"one heavy cluster and more beside it", snap(two, rows(1, 1, 2)), map[int32]int64{1: 45, 2: 30, 3: 1}, true},
	} {
		var w map[cluster.Key]int64
		if tc.weights != nil {
			w = map[cluster.Key]int64{}
			for _, row := range tc.s.Clusters {
				w[row.key()] = tc.weights[row.ID]
			}
		}
		if got := tc.s.drifted(w, 1.5, 16); got != tc.want {
			t.Errorf("%s: drifted %v", tc.name, got)
		}
	}
}

// A graceful stop gives each of the instance's clusters to the least loaded
// peer that may own it, or to nobody, and moves nothing else.
func TestLeaving(t *testing.T) {
	s := snap([]instanceRow{inst(1, facility("F")), inst(2, facility("F")), inst(3)},
		append(rows(1, 2, 3, 3, 1), inF(6, "G", 3)))
	want := []grant{{3, 2}, {4, 1}, {6, 0}}
	if got := leaving(s, 3, nil, 1.25); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// An instance's claims are the clusters it owns, less those it is asked to
// hand over; a handover asked of another owner changes nothing.
func TestClaims(t *testing.T) {
	s := snap([]instanceRow{inst(1), inst(2)}, rows(1, 1, 2, 1),
		handoverRow{Cluster: 2, Giver: 1, Receiver: 2}, handoverRow{Cluster: 4, Giver: 2, Receiver: 1})
	byKey, byID, giving := s.claims(1)
	if !slices.Equal(giving, []int32{2}) || len(byKey) != 2 || len(byID) != 2 {
		t.Fatalf("claims %v, giving %v", byKey, giving)
	}
	for _, id := range []int32{1, 4} {
		row := tagRow(id, 1)
		if want := (Claim{ID: id, Key: row.key(), Epoch: 1}); byID[id] != want || byKey[row.key()] != want {
			t.Errorf("cluster %d: %+v / %+v, want %+v", id, byID[id], byKey[row.key()], want)
		}
	}
}
