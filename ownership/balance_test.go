package ownership

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func items(n int, weight func(i int) int64) []Item {
	out := make([]Item, n)
	for i := range out {
		out[i] = Item{ID: int32(i + 1), Key: fmt.Sprintf("tags/f/%03d", i)}
		if weight != nil {
			out[i].Weight = weight(i)
		}
	}
	return out
}

// apply sets the items' owners to a Balance result and counts the changes.
func apply(its []Item, final map[int32]int32) (moves int) {
	for i := range its {
		if to := final[its[i].ID]; to != its[i].Owner {
			if its[i].Owner != 0 {
				moves++
			}
			its[i].Owner = to
		}
	}
	return moves
}

func counts(its []Item, insts []int32) map[int32]int {
	c := map[int32]int{}
	for _, id := range insts {
		c[id] = 0
	}
	for _, it := range its {
		if it.Owner != 0 {
			c[it.Owner]++
		}
	}
	return c
}

func loads(its []Item) map[int32]int64 {
	l := map[int32]int64{}
	for _, it := range its {
		l[it.Owner] += it.Weight
	}
	return l
}

func spread(c map[int32]int) int {
	lo, hi := -1, 0
	for _, n := range c {
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return hi - lo
}

func ratio(its []Item, insts []int32) float64 {
	l := loads(its)
	var total, top int64
	for _, id := range insts {
		total += l[id]
		top = max(top, l[id])
	}
	if total == 0 {
		return 1
	}
	return float64(top) / (float64(total) / float64(len(insts)))
}

func TestBalanceEvenCountsWithinOne(t *testing.T) {
	for _, tc := range []struct{ clusters, instances int }{{10, 3}, {100, 3}, {7, 7}, {3, 5}, {64, 4}, {1, 1}} {
		insts := make([]int32, tc.instances)
		for i := range insts {
			insts[i] = int32(10 + i)
		}
		its := items(tc.clusters, nil)
		apply(its, Balance(its, insts, 1.25, true))
		c := counts(its, insts)
		if spread(c) > 1 {
			t.Errorf("%d clusters on %d instances: counts %v", tc.clusters, tc.instances, c)
		}
		for _, it := range its {
			if it.Owner == 0 {
				t.Errorf("%d clusters on %d instances: %s unowned", tc.clusters, tc.instances, it.Key)
			}
		}
	}
}

func TestBalanceJoinAndLeaveMoveFew(t *testing.T) {
	its := items(30, nil)
	insts := []int32{1, 2, 3}
	apply(its, Balance(its, insts, 1.25, true))

	// A fourth instance joins: it gets its share (7 or 8) and nothing else
	// moves.
	insts = append(insts, 4)
	moves := apply(its, Balance(its, insts, 1.25, true))
	c := counts(its, insts)
	if spread(c) > 1 || moves != c[4] || moves > 8 {
		t.Errorf("join: %d moves, counts %v", moves, c)
	}

	// Instance 2 leaves: only its clusters move.
	had := c[2]
	insts = []int32{1, 3, 4}
	moves = apply(its, Balance(its, insts, 1.25, true))
	c = counts(its, insts)
	if spread(c) > 1 || moves != had {
		t.Errorf("leave: %d moves (had %d), counts %v", moves, had, c)
	}

	// Nothing changed: nothing moves.
	if moves := apply(its, Balance(its, insts, 1.25, true)); moves != 0 {
		t.Errorf("stable input moved %d", moves)
	}
}

// withinBound reports whether the work is balanced as Balance promises:
// the heaviest instance at most limit x the mean, unless it holds a single
// busy cluster (which cannot be split), in which case the others must be
// balanced among themselves.
func withinBound(its []Item, insts []int32, limit float64) bool {
	l := loads(its)
	busy := map[int32]int{}
	for _, it := range its {
		if it.Weight > 0 {
			busy[it.Owner]++
		}
	}
	rest := slices.Clone(insts)
	for len(rest) > 1 {
		var total, top int64
		topID := rest[0]
		for _, id := range rest {
			total += l[id]
			if l[id] > top {
				top, topID = l[id], id
			}
		}
		if total == 0 || float64(top) <= limit*float64(total)/float64(len(rest)) {
			return true
		}
		if busy[topID] != 1 {
			return false
		}
		rest = slices.DeleteFunc(rest, func(id int32) bool { return id == topID })
	}
	return true
}

func TestBalanceWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		n := 20 + r.IntN(100)
		its := items(n, func(int) int64 { return int64(r.IntN(1000)) })
		insts := []int32{1, 2, 3, 4}[:2+r.IntN(3)]
		// Start from a lopsided assignment: everything on the first.
		for i := range its {
			its[i].Owner = insts[0]
		}
		apply(its, Balance(its, insts, 1.25, true))
		if got := ratio(its, insts); got > 1.25 {
			t.Errorf("trial %d: %d clusters on %d instances: max/mean %.3f, loads %v", trial, n, len(insts), got, loads(its))
		}
		if moves := apply(its, Balance(its, insts, 1.25, true)); moves != 0 {
			t.Errorf("trial %d: a balanced input moved %d", trial, moves)
		}
	}
}

func TestBalanceDriftWithHeavyClusters(t *testing.T) {
	// Work that grows tenfold on one instance leaves clusters heavier than
	// the bound allows: each such cluster stays alone, the rest balance.
	r := rand.New(rand.NewPCG(9, 9))
	for trial := range 500 {
		its := items(12, func(i int) int64 { return int64(10 + 7*i) })
		insts := []int32{1, 2, 3}
		for i := range its {
			its[i].Owner = insts[r.IntN(3)]
		}
		apply(its, Balance(its, insts, 1.25, true))
		for i := range its {
			if its[i].Owner == 1 {
				its[i].Weight *= 10
			}
		}
		apply(its, Balance(its, insts, 1.25, true))
		if !withinBound(its, insts, 1.25) {
			t.Fatalf("trial %d: loads %v", trial, loads(its))
		}
		if moves := apply(its, Balance(its, insts, 1.25, true)); moves != 0 {
			t.Fatalf("trial %d: a balanced input moved %d", trial, moves)
		}
	}
}

func TestBalanceHeavyClusterStaysPut(t *testing.T) {
	// One cluster outweighs all the others together: the best is that
	// instance holding it alone.
	its := items(5, func(i int) int64 { return []int64{1000, 1, 1, 1, 1}[i] })
	apply(its, Balance(its, []int32{1, 2}, 1.25, true))
	heavy := its[0].Owner
	for _, it := range its[1:] {
		if it.Owner == heavy {
			t.Errorf("light cluster %s shares the heavy one's instance", it.Key)
		}
	}
}

func TestBalanceIdleClustersSpreadInWorkMode(t *testing.T) {
	its := items(12, func(i int) int64 {
		if i < 2 {
			return 100
		}
		return 0
	})
	insts := []int32{1, 2, 3}
	apply(its, Balance(its, insts, 1.25, true))
	if c := counts(its, insts); spread(c) > 1 {
		t.Errorf("counts %v", c)
	}
	if its[0].Owner == its[1].Owner {
		t.Errorf("both busy clusters on instance %d", its[0].Owner)
	}
}

func TestBalanceRespectsAllowed(t *testing.T) {
	its := items(20, nil)
	for i := range its {
		if i%2 == 0 {
			its[i].Allowed = func(inst int32) bool { return inst == 1 }
		} else {
			its[i].Allowed = func(inst int32) bool { return inst != 1 }
		}
	}
	its[0].Allowed = func(int32) bool { return false } // nobody may own it
	its[1].Owner = 1                                   // not allowed there
	final := Balance(its, []int32{1, 2, 3}, 1.25, true)
	for _, it := range its {
		to := final[it.ID]
		if it.ID == 1 {
			if to != 0 {
				t.Errorf("%s: nobody may own it, got %d", it.Key, to)
			}
			continue
		}
		if to == 0 || !it.Allowed(to) {
			t.Errorf("%s -> %d, not allowed", it.Key, to)
		}
	}
	apply(its, final)
	c := counts(its, []int32{2, 3})
	if d := c[2] - c[3]; d > 1 || d < -1 {
		t.Errorf("within the instances allowed, counts %v", c)
	}
}

func TestBalancePlaceOnlyMovesNothing(t *testing.T) {
	its := items(10, nil)
	for i := range its[:8] {
		its[i].Owner = 1
	}
	final := Balance(its, []int32{1, 2}, 1.25, false)
	for _, it := range its[:8] {
		if final[it.ID] != 1 {
			t.Errorf("%s moved without rebalance", it.Key)
		}
	}
	for _, it := range its[8:] {
		if final[it.ID] != 2 {
			t.Errorf("%s placed on %d, want the least loaded 2", it.Key, final[it.ID])
		}
	}
}

func TestBalanceDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	its := items(40, func(int) int64 { return int64(r.IntN(50)) })
	want := Balance(its, []int32{3, 1, 2}, 1.25, true)
	for range 10 {
		shuffled := slices.Clone(its)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := Balance(shuffled, []int32{2, 3, 1}, 1.25, true)
		for id, to := range want {
			if got[id] != to {
				t.Fatalf("cluster %d: %d, then %d with the input in another order", id, to, got[id])
			}
		}
	}
}

func FuzzBalance(f *testing.F) {
	f.Add(uint64(1), uint8(10), uint8(3), true)
	f.Add(uint64(7), uint8(0), uint8(1), false)
	f.Add(uint64(146), uint8(0x11), uint8(0x88), true) // set-aside instances must be reconsidered
	f.Fuzz(func(t *testing.T, seed uint64, n, k uint8, rebalance bool) {
		r := rand.New(rand.NewPCG(seed, 0))
		insts := make([]int32, int(k%6))
		for i := range insts {
			insts[i] = int32(i + 1)
		}
		its := items(int(n%64), func(int) int64 { return int64(r.IntN(20)) - 2 })
		for i := range its {
			its[i].Owner = int32(r.IntN(8))
			if r.IntN(4) == 0 {
				bad := int32(r.IntN(6) + 1)
				its[i].Allowed = func(inst int32) bool { return inst != bad }
			}
		}
		final := Balance(its, insts, 1.25, rebalance)
		for _, it := range its {
			to, ok := final[it.ID]
			if !ok {
				t.Fatalf("%s missing from the result", it.Key)
			}
			mayAny := false
			for _, in := range insts {
				mayAny = mayAny || it.Allowed == nil || it.Allowed(in)
			}
			switch {
			case to == 0 && mayAny:
				t.Fatalf("%s unowned though an instance may own it", it.Key)
			case to != 0 && (!slices.Contains(insts, to) || it.Allowed != nil && !it.Allowed(to)):
				t.Fatalf("%s given to %d", it.Key, to)
			}
		}
		apply(its, final)
		if moves := apply(its, Balance(its, insts, 1.25, rebalance)); moves != 0 {
			t.Fatalf("not stable: %d moves on its own output", moves)
		}
	})
}

func BenchmarkBalance(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	its := items(500, func(int) int64 { return int64(r.IntN(10000)) })
	insts := []int32{1, 2, 3, 4, 5, 6, 7, 8}
	for i := range its {
		its[i].Owner = insts[i%3]
	}
	b.ReportAllocs()
	for b.Loop() {
		Balance(its, insts, 1.25, true)
	}
}
