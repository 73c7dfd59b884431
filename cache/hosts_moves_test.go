package cache

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// TestIndexUnderRandomMoves takes and returns capacity at random on hosts in
// three indexes each (one of them the host's own hostname index), with ids
// sharing long prefixes and demand flipping tags between contested and not,
// and after every step checks the index: every host filed once at its idle
// values, its remembered level the one the tree holds, the contested counts
// of every level, every hostname walk, and the order of a whole walk: 1,500
// steps in the default suite, 6,000 at full size (seed.FullSize).
func TestIndexUnderRandomMoves(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	const hosts = 30
	var ids []string
	for i := range hosts {
		id := fmt.Sprintf("h%02d", i)
		if i%5 == 0 {
			id = fmt.Sprintf("0123456789abcdef-h%02d", i)
		}
		ids = append(ids, id)
		m := baseHost(id, "a1")
		m.tags[m.id+"a"], m.tags[m.id+"b"] = "general", fmt.Sprintf("pool%d", i%7)
		m.tags[m.id+"d"] = m.name
		f.addHost(t, m)
	}
	rng := rand.New(rand.NewPCG(5, 9))
	type held struct {
		id string
		r  match.Resources
	}
	var mine []held
	seen := map[bool]bool{}
	steps := 1500
	if seed.FullSize() {
		steps = 6000
	}
	for step := range steps {
		if len(mine) > 0 && rng.IntN(3) == 0 {
			k := rng.IntN(len(mine))
			f.r.hosts.Return(mine[k].id, mine[k].r)
			mine = append(mine[:k], mine[k+1:]...)
		} else {
			r := match.Resources{Cores: int64(rng.IntN(8)+1) * 100, Mem: int64(rng.IntN(8)+1) * gb / 2}
			id := ids[rng.IntN(len(ids))]
			if f.r.hosts.Take(id, r) {
				mine = append(mine, held{id, r})
			}
		}
		if step%7 == 0 {
			f.r.hosts.SetDemand([]match.TagDemand{{Facility: "local", Tag: fmt.Sprintf("pool%d", rng.IntN(7)), Need: match.Resources{Cores: int64(rng.IntN(4000))}}})
		}
		checkIndex(t, f.r.hosts)
		seen[checkLevels(t, f.r.hosts)] = true
		for _, id := range ids {
			h, _ := f.r.hosts.Host(id)
			min := match.Resources{Cores: int64(rng.IntN(17)) * 100, Mem: int64(rng.IntN(70)) * gb}
			got := walkAll(f.r.hosts, "local", h.Name, min)
			want := h.Idle.Covers(min) && h.Idle.Cores >= minIdleCores && h.Idle.Mem >= minIdleMem
			if (len(got) == 1) != want || len(got) > 1 {
				t.Fatalf("step %d: walk of %s at %+v gave %d hosts, idle %+v", step, id, min, len(got), h.Idle)
			}
		}
		all := walkAll(f.r.hosts, "local", "general", match.Resources{})
		for i := 1; i < len(all); i++ {
			a, b := all[i-1], all[i]
			if a.Idle.Cores > b.Idle.Cores || a.Idle.Cores == b.Idle.Cores && (a.Idle.Mem > b.Idle.Mem || a.Idle.Mem == b.Idle.Mem && a.ID >= b.ID) {
				t.Fatalf("step %d: order %s %+v before %s %+v", step, a.ID, a.Idle, b.ID, b.Idle)
			}
		}
	}
	if !seen[true] || !seen[false] {
		t.Fatalf("contested states seen: %v", seen)
	}
}

// checkLevels checks each filed host's remembered levels and contested
// count, and every level's contested counts, and reports whether any tag is
// contested.
func checkLevels(tb testing.TB, h *Hosts) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, rec := range h.st.hosts {
		if !rec.inTrees {
			continue
		}
		var n int32
		for i, ix := range rec.idxs {
			if ix.contested {
				n++
			}
			it, ok := ix.levels.Get(levelItem{cores: rec.ixCores})
			if !ok || it.lv != rec.lvs[i] {
				tb.Fatalf("host %s: level pointer %d stale", rec.id, i)
			}
		}
		if n != rec.contested {
			tb.Fatalf("host %s counts %d contested tags, carries %d", rec.id, rec.contested, n)
		}
	}
	any := false
	for k, ix := range h.st.index {
		any = any || ix.contested
		ix.levels.Ascend(func(it levelItem) bool {
			var c1, c2 int
			it.lv.hosts.Ascend(func(s slot) bool {
				if s.rec.contested >= 1 {
					c1++
				}
				if s.rec.contested >= 2 {
					c2++
				}
				return true
			})
			if c1 != it.lv.contested1 || c2 != it.lv.contested2 {
				tb.Fatalf("index %v level %d counts %d/%d contested hosts, holds %d/%d",
					k, it.cores, it.lv.contested1, it.lv.contested2, c1, c2)
			}
			return true
		})
	}
	return any
}
