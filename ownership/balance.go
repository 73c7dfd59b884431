package ownership

import (
	"slices"
	"sort"
)

// Item is one cluster as balancing sees it.
type Item struct {
	ID     int32
	Key    string // ties are broken by key, so every leader decides alike
	Owner  int32  // current owner (a pending handover's receiver counts); 0: none
	Weight int64  // pending work; negative counts as 0
	// Allowed says whether an instance may own the cluster (static
	// restrictions); nil: any instance.
	Allowed func(instance int32) bool
}

// Balance decides the owner of every item among instances and returns it by
// item ID (0: no instance may own it). It starts from the current owners:
// an owner that is not among instances or may not own its item loses it,
// and unowned items go, heaviest first, to the least loaded instance that
// may own them. With rebalance set it then moves items from the most loaded
// instance to less loaded ones while that improves the balance:
//
//   - when every item weighs the same (an idle farm, or even work), until
//     item counts are within one;
//   - otherwise until the heaviest instance's work is at most threshold x the
//     mean, and then idle items (weight 0) until counts are within one.
//
// A move must strictly lower the most loaded instance, so the result is
// stable (running Balance on its own output moves nothing) and moves few
// items. With static restrictions the bounds hold as far as the
// restrictions let them.
func Balance(items []Item, instances []int32, threshold float64, rebalance bool) map[int32]int32 {
	insts := slices.Clone(instances)
	slices.Sort(insts)
	insts = slices.Compact(insts)
	pos := make(map[int32]int, len(insts))
	for p, id := range insts {
		pos[id] = p
	}
	b := &balancer{items: items, insts: insts, owner: make([]int, len(items)),
		load: make([]int64, len(insts)), count: make([]int64, len(insts))}
	b.even = true
	for i := range items {
		if b.weight(i) != b.weight(0) {
			b.even = false
			break
		}
	}

	var unowned []int
	for i, it := range items {
		p, ok := pos[it.Owner]
		if ok && b.allowed(i, p) {
			b.owner[i] = p
			b.load[p] += b.cost(i)
			b.count[p]++
		} else {
			b.owner[i] = -1
			unowned = append(unowned, i)
		}
	}
	sort.Slice(unowned, func(x, y int) bool {
		i, j := unowned[x], unowned[y]
		if wi, wj := b.weight(i), b.weight(j); wi != wj && !b.even {
			return wi > wj
		}
		return b.before(i, j)
	})
	for _, i := range unowned {
		best := -1
		for p := range insts {
			if b.allowed(i, p) && (best < 0 || b.lighter(i, p, best)) {
				best = p
			}
		}
		if best >= 0 {
			b.owner[i] = best
			b.load[best] += b.cost(i)
			b.count[best]++
		}
	}

	if rebalance && len(insts) > 1 {
		if b.even {
			b.improve(b.count, func(int) bool { return true }, func(int) int64 { return 1 }, b.countsApart)
		} else {
			b.improve(b.load, func(i int) bool { return b.weight(i) > 0 }, b.weight, func(active []bool) bool {
				return b.overThreshold(active, threshold)
			})
			b.improve(b.count, func(i int) bool { return b.weight(i) == 0 }, func(int) int64 { return 1 }, b.countsApart)
		}
	}

	out := make(map[int32]int32, len(items))
	for i, it := range items {
		if b.owner[i] >= 0 {
			out[it.ID] = insts[b.owner[i]]
		} else {
			out[it.ID] = 0
		}
	}
	return out
}

type balancer struct {
	items []Item
	insts []int32
	owner []int // position in insts; -1: none
	load  []int64
	count []int64
	even  bool
}

func (b *balancer) weight(i int) int64 { return max(b.items[i].Weight, 0) }

// cost is what an item adds to its owner's load: its weight, or one when
// every item weighs the same.
func (b *balancer) cost(i int) int64 {
	if b.even {
		return 1
	}
	return b.weight(i)
}

func (b *balancer) allowed(i, p int) bool {
	return b.items[i].Allowed == nil || b.items[i].Allowed(b.insts[p])
}

func (b *balancer) before(i, j int) bool {
	if b.items[i].Key != b.items[j].Key {
		return b.items[i].Key < b.items[j].Key
	}
	return b.items[i].ID < b.items[j].ID
}

// lighter reports whether placing item i on p is better than on q: less
// load, then fewer items (so idle items spread), then the smaller id. An
// idle item looks at counts first.
func (b *balancer) lighter(i, p, q int) bool {
	lp, lq, cp, cq := b.load[p], b.load[q], b.count[p], b.count[q]
	if b.cost(i) == 0 {
		lp, lq, cp, cq = cp, cq, lp, lq
	}
	if lp != lq {
		return lp < lq
	}
	if cp != cq {
		return cp < cq
	}
	return p < q
}

func (b *balancer) countsApart(active []bool) bool {
	lo, hi := int64(-1), int64(0)
	for p, c := range b.count {
		if active[p] {
			if lo < 0 || c < lo {
				lo = c
			}
			hi = max(hi, c)
		}
	}
	return hi-lo > 1
}

func (b *balancer) overThreshold(active []bool, threshold float64) bool {
	var total, hi int64
	n := 0
	for p, l := range b.load {
		if active[p] {
			total += l
			hi = max(hi, l)
			n++
		}
	}
	return total > 0 && float64(hi) > threshold*float64(total)/float64(n)
}

// improve moves items from the most loaded instance by measure m to the one
// where the move lowers the pair's maximum most, while need holds and a
// move strictly lowers that instance. When none does (it holds a cluster too
// heavy to move, say), that instance is set aside and the others are
// balanced among themselves; every move brings the set-aside ones back, as
// it may have opened a way for them. m is load or count; cost is what an
// item adds to m; movable says which items this phase may move.
func (b *balancer) improve(m []int64, movable func(int) bool, cost func(int) int64, need func(active []bool) bool) {
	active := make([]bool, len(b.insts))
	reset := func() int {
		for p := range active {
			active[p] = true
		}
		return len(active)
	}
	left := reset()
	// Every move lowers the sum of squares of m, so this ends; the cap only
	// bounds the work on extreme weights.
	for moves := 0; moves <= len(b.items)*len(b.insts); {
		if left < 2 || !need(active) {
			return
		}
		top := -1
		for p := range b.insts {
			if active[p] && (top < 0 || m[p] > m[top]) {
				top = p
			}
		}
		bi, bp := -1, -1
		var bestMax int64
		for i := range b.items {
			if b.owner[i] != top || !movable(i) {
				continue
			}
			c := cost(i)
			for p := range b.insts {
				if !active[p] || p == top || !b.allowed(i, p) || m[p]+c >= m[top] {
					continue
				}
				after := max(m[top]-c, m[p]+c)
				better := bi < 0 || after < bestMax ||
					(after == bestMax && (m[p] < m[bp] || (m[p] == m[bp] && (p < bp || (p == bp && b.before(i, bi))))))
				if better {
					bi, bp, bestMax = i, p, after
				}
			}
		}
		if bi < 0 {
			active[top] = false
			left--
			continue
		}
		b.owner[bi] = bp
		b.load[top] -= b.cost(bi)
		b.load[bp] += b.cost(bi)
		b.count[top]--
		b.count[bp]++
		moves++
		left = reset()
	}
}
