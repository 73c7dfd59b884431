package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

func warmIDs(h *Hosts, tag, layer, job string, min match.Resources, uncontested bool) []string {
	var ids []string
	h.WalkWarm("local", tag, min, 1600, layer, job, uncontested, func(x match.Host) bool {
		ids = append(ids, x.ID)
		return true
	})
	return ids
}

// The replica remembers where procs ran from the proc rows it applies.
func TestWarmFromProcRows(t *testing.T) {
	now := &clock{now: epoch}
	f := newFake(now.Now, 0)
	f.allocs(t)
	for _, id := range []string{"h1", "h2"} {
		m := baseHost(id, "a1")
		m.tags["t"] = "general"
		f.addHost(t, m)
	}
	f.apply(t, f.insert("job", "pk_job", "j1", "pk_show", "s1", "pk_folder", "f1", "pk_dept", "d1"),
		f.insert("layer", "pk_layer", "l1", "pk_job", "j1"), f.insert("layer", "pk_layer", "l2", "pk_job", "j1"))
	f.apply(t, f.proc("p1", "h2", "l1", "fr1", 100, 0))
	h, _ := f.r.hosts.Host("h2")
	if want := []match.Ran{{Layer: "l1", Job: "j1", At: epoch, Running: 1}}; !slices.Equal(h.Ran, want) {
		t.Fatalf("h2 remembers %+v, want %+v", h.Ran, want)
	}
	if got := warmIDs(f.r.hosts, "general", "l1", "j1", match.Resources{}, true); !slices.Equal(got, []string{"h2"}) {
		t.Fatalf("warm for l1: %v, want [h2]", got)
	}
	if got := warmIDs(f.r.hosts, "general", "l2", "j1", match.Resources{}, true); !slices.Equal(got, []string{"h2"}) {
		t.Fatalf("warm for l2 of the same job: %v, want [h2]", got)
	}
	if got := warmIDs(f.r.hosts, "general", "l9", "j9", match.Resources{}, true); len(got) != 0 {
		t.Fatalf("warm for another job: %v, want none", got)
	}
	now.set(epoch.Add(time.Minute))
	f.apply(t, f.del("proc", "p1"))
	h, _ = f.r.hosts.Host("h2")
	if want := []match.Ran{{Layer: "l1", Job: "j1", At: epoch.Add(time.Minute)}}; !slices.Equal(h.Ran, want) {
		t.Fatalf("after the release h2 remembers %+v, want %+v", h.Ran, want)
	}
}

// A host remembers a few layers and a layer a few hosts, the most recent
// first; WalkWarm offers only what a walk of the same arguments would.
func TestWarmMemoryAndWalk(t *testing.T) {
	h := NewHosts(func() time.Time { return epoch }, 0)
	h.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	r := match.Resources{Cores: 1600, Mem: 64 * gb}
	for i := range 20 {
		id := fmt.Sprintf("h%02d", i)
		tags := []string{"general"}
		if i == 19 {
			tags = append(tags, "pool")
		}
		h.SetHost(match.Host{ID: id, Name: id, Facility: "local", Alloc: "a1", OS: "linux", Tags: tags,
			Total: r, Idle: r, MemFree: r.Mem, TempFree: gb, TempTotal: gb})
	}
	for i := range 10 {
		h.ProcBooked("h00", fmt.Sprintf("l%d", i), "j")
	}
	x, _ := h.Host("h00")
	if len(x.Ran) != ranMemory || x.Ran[0].Layer != "l9" || x.Ran[ranMemory-1].Layer != "l6" {
		t.Fatalf("h00 remembers %+v, want l9..l6", x.Ran)
	}
	for i := range 20 {
		h.ProcBooked(fmt.Sprintf("h%02d", i), "wide", "jw")
	}
	want := []string{"h19", "h18", "h17", "h16"}
	if got := warmIDs(h, "general", "wide", "", match.Resources{}, false); !slices.Equal(got, want) {
		t.Fatalf("warm for wide: %v, want %v", got, want)
	}
	h.SetDemand([]match.TagDemand{{Facility: "local", Tag: "pool", Need: match.Resources{Cores: 1 << 30}}})
	if got := warmIDs(h, "general", "wide", "", match.Resources{}, true); slices.Contains(got, "h19") || len(got) != 3 {
		t.Fatalf("uncontested warm for wide: %v, want h18..h16", got)
	}
	if !h.Take("h18", match.Resources{Cores: 1600}) {
		t.Fatal("take h18")
	}
	if got := warmIDs(h, "general", "wide", "", match.Resources{Cores: 100}, false); slices.Contains(got, "h18") {
		t.Fatalf("warm for wide with a core: %v offers the full h18", got)
	}
	if got := warmIDs(h, "pool", "wide", "", match.Resources{}, false); !slices.Equal(got, []string{"h19"}) {
		t.Fatalf("warm for wide in pool: %v, want [h19]", got)
	}
	// Many layers come and go: the keys stay bounded by the hosts' memories.
	for i := range 5000 {
		h.ProcBooked(fmt.Sprintf("h%02d", i%20), fmt.Sprintf("x%d", i), fmt.Sprintf("jx%d", i))
	}
	if n := len(h.st.warmLayers) + len(h.st.warmJobs); n > 4*ranMemory*20+64 {
		t.Fatalf("%d layers and jobs remembered for 20 hosts", n)
	}
}

// A state loaded from a snapshot keeps what the hosts remembered, with
// nothing running that the load did not find.
func TestWarmCarriedOverAReload(t *testing.T) {
	h := NewHosts(func() time.Time { return epoch }, 0)
	h.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	r := match.Resources{Cores: 1600, Mem: 64 * gb}
	host := match.Host{ID: "h1", Name: "h1", Facility: "local", Alloc: "a1", OS: "linux", Tags: []string{"general"},
		Total: r, Idle: r, MemFree: r.Mem, TempFree: gb, TempTotal: gb}
	h.SetHost(host)
	h.ProcBooked("h1", "l1", "j1")
	h.ProcBooked("h1", "l2", "j1")
	loaded := NewHosts(func() time.Time { return epoch }, 0)
	loaded.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	loaded.SetHost(host)
	loaded.ProcBooked("h1", "l2", "j1")
	h.mu.Lock()
	h.swapLocked(loaded.st, 0)
	h.mu.Unlock()
	x, _ := h.Host("h1")
	want := []match.Ran{{Layer: "l2", Job: "j1", At: epoch, Running: 1}, {Layer: "l1", Job: "j1", At: epoch}}
	if !slices.Equal(x.Ran, want) {
		t.Fatalf("after the reload h1 remembers %+v, want %+v", x.Ran, want)
	}
	if got := warmIDs(h, "general", "l1", "", match.Resources{}, false); !slices.Equal(got, []string{"h1"}) {
		t.Fatalf("warm for l1 after the reload: %v", got)
	}
}

// WalkWarm keeps the remembered hosts by the level of their idle cores
// without reading them when the level is small: whatever the levels hold,
// it visits exactly what reading every remembered host visits (in its
// order), on a farm of few sizes taken and handed back at random.
func TestWarmWalkMatchesReadingEveryHost(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	h := NewHosts(func() time.Time { return epoch }, 0)
	h.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	const hosts = 60
	for i := range hosts {
		id := fmt.Sprintf("h%02d", i)
		tags := []string{"general"}
		if i%3 == 0 {
			tags = append(tags, "pool")
		}
		r := match.Resources{Cores: int64(800 << (i % 2)), Mem: 64 * gb}
		h.SetHost(match.Host{ID: id, Name: id, Facility: "local", Alloc: "a1", OS: "linux", Tags: tags,
			Total: r, Idle: r, MemFree: r.Mem, TempFree: gb, TempTotal: gb})
	}
	// reference is WalkWarm reading every remembered host.
	reference := func(tag string, min match.Resources, cores int64, layer, job string, uncontested bool) []string {
		h.mu.RLock()
		defer h.mu.RUnlock()
		ix := h.st.index[tagKey{"local", tag}]
		var own int32
		if ix.contested {
			own = 1
		}
		var ids []string
		add := func(recs, skip []*hostRec) {
			for _, rec := range recs {
				if rec.h.Idle.Cores == cores && rec.inTrees && !slices.Contains(skip, rec) && slices.Contains(rec.idxs, ix) &&
					rec.h.Idle.Covers(min) && !(uncontested && rec.contested > own) {
					ids = append(ids, rec.id)
				}
			}
		}
		add(h.st.warmLayers[layer], nil)
		if job != "" {
			add(h.st.warmJobs[job], h.st.warmLayers[layer])
		}
		return ids
	}
	for step := range 3000 {
		id := fmt.Sprintf("h%02d", rng.IntN(hosts))
		switch rng.IntN(4) {
		case 0:
			h.ProcBooked(id, fmt.Sprintf("l%d", rng.IntN(12)), fmt.Sprintf("j%d", rng.IntN(4)))
		case 1:
			h.Take(id, match.Resources{Cores: int64(100 * (1 + rng.IntN(4))), Mem: gb})
		case 2:
			h.Return(id, match.Resources{Cores: int64(100 * (1 + rng.IntN(4))), Mem: gb})
		case 3:
			if rng.IntN(50) == 0 {
				need := match.Resources{Cores: int64(rng.IntN(2)) << 30}
				h.SetDemand([]match.TagDemand{{Facility: "local", Tag: "pool", Need: need}})
			}
		}
		tag := []string{"general", "pool"}[rng.IntN(2)]
		min := match.Resources{Cores: 100, Mem: int64(rng.IntN(64)) * gb}
		cores := int64(100 * (1 + rng.IntN(16)))
		layer, job := fmt.Sprintf("l%d", rng.IntN(12)), []string{"", fmt.Sprintf("j%d", rng.IntN(4))}[rng.IntN(2)]
		uncontested := rng.IntN(2) == 0
		var got []string
		h.WalkWarm("local", tag, min, cores, layer, job, uncontested, func(x match.Host) bool {
			got = append(got, x.ID)
			return true
		})
		if want := reference(tag, min, cores, layer, job, uncontested); !slices.Equal(got, want) {
			t.Fatalf("step %d: WalkWarm(%s, cores %d, %s, %q) visited %v, reading every host %v",
				step, tag, cores, layer, job, got, want)
		}
	}
}
