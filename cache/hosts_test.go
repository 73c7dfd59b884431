package cache

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

func normalizeTest(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

const gb = 1048576

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is an injected clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func baseHost(id, alloc string) *hostModel {
	return &hostModel{id: id, alloc: alloc, name: "name-" + id, lock: "OPEN", state: "UP", os: "linux",
		cores: 1600, coresIdle: 1600, mem: 64 * gb, memIdle: 64 * gb, memFree: 64 * gb,
		mcpTotal: 100 * gb, mcpFree: 100 * gb, ping: epoch, tags: map[string]string{}}
}

func (f *fake) allocs(tb testing.TB) map[string]string {
	f.apply(tb,
		f.insert("alloc", "pk_alloc", "a1", "pk_facility", "local", "str_tag", "general"),
		f.insert("alloc", "pk_alloc", "a2", "pk_facility", "local", "str_tag", "render"),
		f.insert("alloc", "pk_alloc", "a3", "pk_facility", "cloud", "str_tag", "general"))
	return map[string]string{"a1": "local", "a2": "local", "a3": "cloud"}
}

func (f *fake) addHost(tb testing.TB, m *hostModel) {
	cs := f.hostRows(m)
	for k, t := range m.tags {
		cs = append(cs, f.insert("host_tag", "pk_host_tag", k, "pk_host", m.id, "str_tag", t))
	}
	f.apply(tb, cs...)
}

func TestOfferedRules(t *testing.T) {
	now := &clock{now: epoch}
	for _, tc := range []struct {
		name    string
		edit    func(m *hostModel)
		offered bool
	}{
		{"open and up", func(m *hostModel) {}, true},
		{"locked", func(m *hostModel) { m.lock = "LOCKED" }, false},
		{"nimby locked", func(m *hostModel) { m.lock = "NIMBY_LOCKED" }, false},
		{"down", func(m *hostModel) { m.state = "DOWN" }, false},
		{"repair", func(m *hostModel) { m.state = "REPAIR" }, false},
		{"9 idle core units", func(m *hostModel) { m.coresIdle = 9 }, false},
		{"10 idle core units", func(m *hostModel) { m.coresIdle = 10 }, true},
		{"idle memory under 256 MB", func(m *hostModel) { m.memIdle = 262143 }, false},
		{"free memory under 256 MB is the usable memory", func(m *hostModel) { m.memFree = 200000 }, false},
		{"free memory under 512 MB", func(m *hostModel) { m.memFree = 524287 }, false},
		{"free memory 512 MB", func(m *hostModel) { m.memFree = 524288 }, true},
		{"temp space under 5%", func(m *hostModel) { m.mcpFree = m.mcpTotal/20 - 1 }, false},
		{"temp space under 5% on windows", func(m *hostModel) { m.mcpFree, m.os = 0, "Windows" }, true},
		{"pinged at the max age", func(m *hostModel) { m.ping = epoch.Add(-time.Minute) }, true},
		{"stale", func(m *hostModel) { m.ping = epoch.Add(-time.Minute - time.Microsecond) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(now.Now, time.Minute)
			f.allocs(t)
			m := baseHost("h1", "a1")
			m.tags["t1"] = "General"
			tc.edit(m)
			f.addHost(t, m)
			got := walkAll(f.r.hosts, "local", "general", match.Resources{})
			if (len(got) == 1) != tc.offered {
				t.Fatalf("offered: got %v, want %v", got, tc.offered)
			}
			if !f.r.hosts.Tagged("local", "GENERAL") {
				t.Fatal("Tagged must count a host whether offered or not")
			}
			checkIndex(t, f.r.hosts)
		})
	}
}

func TestUsableMemoryIsTheSmallerOfIdleAndFree(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t"] = "gpu"
	m.memFree, m.gpus, m.gpusIdle, m.gpuMem, m.gpuMemIdle, m.gpuMemFree = 10*gb, 2, 2, 16*gb, 16*gb, 4*gb
	f.addHost(t, m)
	h, _ := f.r.hosts.Host("h1")
	want := match.Resources{Cores: 1600, Mem: 10 * gb, GPUs: 2, GPUMem: 4 * gb}
	if h.Idle != want {
		t.Fatalf("idle %+v, want %+v", h.Idle, want)
	}
	if got := walkAll(f.r.hosts, "local", "gpu", match.Resources{Cores: 100, Mem: gb, GPUs: 1, GPUMem: 5 * gb}); len(got) != 0 {
		t.Fatalf("a host with 4 GB of free GPU memory offered for 5 GB: %v", got)
	}
	if got := walkAll(f.r.hosts, "local", "gpu", match.Resources{Cores: 100, Mem: gb, GPUs: 3}); len(got) != 0 {
		t.Fatalf("a host with 2 GPUs offered for 3: %v", got)
	}
	if got := walkAll(f.r.hosts, "local", "gpu", match.Resources{Cores: 100, Mem: gb, GPUs: 2, GPUMem: 4 * gb}); len(got) != 1 {
		t.Fatalf("the host fits exactly and was not offered")
	}
	if got := f.r.hosts.Allocs(); len(got) != 3 || got[2] != (cluster.Alloc{ID: "a3", Facility: "cloud", Tag: "general"}) {
		t.Fatalf("allocations %+v", got)
	}
}

func TestStaleHostsFollowTheClock(t *testing.T) {
	now := &clock{now: epoch}
	f := newFake(now.Now, time.Minute)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t"] = "general"
	f.addHost(t, m)
	if len(walkAll(f.r.hosts, "local", "general", match.Resources{})) != 1 {
		t.Fatal("fresh host not offered")
	}
	now.set(epoch.Add(2 * time.Minute))
	if len(walkAll(f.r.hosts, "local", "general", match.Resources{})) != 0 {
		t.Fatal("stale host offered")
	}
	if f.r.hosts.Take("h1", match.Resources{Cores: 100}) {
		t.Fatal("Take succeeded on a stale host")
	}
	f.apply(t, f.update("host_stat", "pk_host_stat", "st-h1", "ts_ping", now.Now()))
	if len(walkAll(f.r.hosts, "local", "general", match.Resources{})) != 1 {
		t.Fatal("host pinged again not offered")
	}
}

// TestHostIndexMatchesBruteForce applies random updates of every kind and
// compares each index, and walks from random minimums, with a brute-force
// scan of the test's own model after every transaction; with random tag
// demand and fractions, it compares each tag's supply and pressure and the
// walks that avoid contested hosts too. 600 transactions in the default
// suite, 3,000 under `make chaos` (CUESCHED_CHAOS=1).
func TestHostIndexMatchesBruteForce(t *testing.T) {
	steps := 600
	if os.Getenv("CUESCHED_CHAOS") == "1" {
		steps = 3000
	}
	now := &clock{now: epoch}
	f := newFake(now.Now, time.Minute)
	facilityOf := f.allocs(t)
	rng := rand.New(rand.NewPCG(7, 11))
	allocs := []string{"a1", "a2", "a3"}
	tagPool := []string{"general", "Render", " pool1 ", "POOL1", "gpu", "big", "render"}
	models := map[string]*hostModel{}
	taken := map[string]match.Resources{}
	tagSeq := 0
	newTag := func(m *hostModel) {
		tagSeq++
		m.tags[fmt.Sprintf("tag%d", tagSeq)] = tagPool[rng.IntN(len(tagPool))]
	}
	randomize := func(m *hostModel) {
		m.coresIdle = rng.Int64N(m.cores + 1)
		m.memIdle = rng.Int64N(m.mem + 1)
		m.memFree = rng.Int64N(m.mem + 1)
		m.gpusIdle = rng.Int64N(m.gpus + 1)
		m.gpuMemIdle = rng.Int64N(m.gpuMem + 1)
		m.gpuMemFree = rng.Int64N(m.gpuMem + 1)
	}
	for i := range 120 {
		m := baseHost(fmt.Sprintf("h%03d", i), allocs[rng.IntN(3)])
		m.cores = int64(rng.IntN(4)+1) * 800
		m.mem = int64(rng.IntN(4)+1) * 16 * gb
		m.gpus, m.gpuMem = int64(rng.IntN(3)), int64(rng.IntN(3))*8*gb
		randomize(m)
		for range rng.IntN(4) {
			newTag(m)
		}
		models[m.id] = m
		f.addHost(t, m)
	}
	ids := func() []string {
		out := make([]string, 0, len(models))
		for id := range models {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	nextHost := 1000
	pr := pressureModel{demand: map[tagKey]match.Resources{}, fraction: 1}
	var avoidedWalks, skippingWalks int // the test must see both
	for step := range steps {
		id := ids()[rng.IntN(len(models))]
		m := models[id]
		var cs []cdc.Change
		switch rng.IntN(16) {
		case 0, 1, 2:
			randomize(m)
			cs = append(cs, f.update("host", "pk_host", id, "int_cores_idle", m.coresIdle, "int_mem_idle", m.memIdle,
				"int_gpus_idle", m.gpusIdle, "int_gpu_mem_idle", m.gpuMemIdle),
				f.update("host_stat", "pk_host_stat", "st-"+id, "int_mem_free", m.memFree, "int_gpu_mem_free", m.gpuMemFree))
		case 3:
			m.lock = []string{"OPEN", "LOCKED", "NIMBY_LOCKED"}[rng.IntN(3)]
			cs = append(cs, f.update("host", "pk_host", id, "str_lock_state", m.lock))
		case 4:
			m.state = []string{"UP", "DOWN", "REPAIR"}[rng.IntN(3)]
			cs = append(cs, f.update("host_stat", "pk_host_stat", "st-"+id, "str_state", m.state))
		case 5:
			newTag(m)
			for k, v := range m.tags {
				cs = append(cs, f.insert("host_tag", "pk_host_tag", k, "pk_host", id, "str_tag", v))
				break
			}
			// Re-send every tag as an update: idempotent for the cache.
			for k, v := range m.tags {
				cs = append(cs, f.update("host_tag", "pk_host_tag", k, "pk_host", id, "str_tag", v))
			}
		case 6:
			for k := range m.tags {
				delete(m.tags, k)
				cs = append(cs, f.del("host_tag", k))
				break
			}
		case 7:
			m.alloc = allocs[rng.IntN(3)]
			cs = append(cs, f.update("host", "pk_host", id, "pk_alloc", m.alloc))
		case 8:
			m.ping = now.Now().Add(-time.Duration(rng.IntN(120)) * time.Second)
			cs = append(cs, f.update("host_stat", "pk_host_stat", "st-"+id, "ts_ping", m.ping))
		case 9:
			// A host goes away with its rows, another arrives.
			for k := range m.tags {
				cs = append(cs, f.del("host_tag", k))
			}
			cs = append(cs, f.del("host_stat", "st-"+id), f.del("host", id))
			delete(models, id)
			delete(taken, id)
			n := baseHost(fmt.Sprintf("h%04d", nextHost), allocs[rng.IntN(3)])
			nextHost++
			randomize(n)
			newTag(n)
			models[n.id] = n
			cs = append(cs, f.hostRows(n)...)
			for k, v := range n.tags {
				cs = append(cs, f.insert("host_tag", "pk_host_tag", k, "pk_host", n.id, "str_tag", v))
			}
		case 10:
			r := match.Resources{Cores: rng.Int64N(400), Mem: rng.Int64N(8 * gb)}
			idle, ok := offeredModel(m, taken[id], now.Now().Add(-time.Minute))
			want := ok && idle.Covers(r)
			if got := f.r.hosts.Take(id, r); got != want {
				t.Fatalf("step %d: Take(%s, %+v) = %v, want %v (idle %+v)", step, id, r, got, want, idle)
			} else if got {
				taken[id] = taken[id].Add(r)
			}
		case 11:
			if tk := taken[id]; tk != (match.Resources{}) {
				f.r.hosts.Return(id, tk)
				delete(taken, id)
			}
		case 12:
			// Memory alone moves: the host changes place within its level.
			m.memFree = rng.Int64N(m.mem + 1)
			cs = append(cs, f.update("host_stat", "pk_host_stat", "st-"+id, "int_mem_free", m.memFree))
		case 13:
			r := match.Resources{Mem: rng.Int64N(4 * gb)}
			idle, ok := offeredModel(m, taken[id], now.Now().Add(-time.Minute))
			if got := f.r.hosts.Take(id, r); got != (ok && idle.Covers(r)) {
				t.Fatalf("step %d: Take(%s, %+v) = %v (idle %+v)", step, id, r, got, idle)
			} else if got {
				taken[id] = taken[id].Add(r)
			}
		case 14:
			// New demand around each tag's supply, so tags flip both ways
			// as hosts move; some tags none, one a tag no host carries.
			var ds []match.TagDemand
			clear(pr.demand)
			for _, fac := range []string{"local", "cloud"} {
				for _, tag := range []string{"general", "render", "pool1", "gpu", "big", "nohost"} {
					if rng.IntN(3) == 0 {
						continue
					}
					sup := bruteSupply(models, taken, facilityOf, fac, tag)
					d := match.Resources{Cores: sup.Cores * int64(rng.IntN(5)+8) / 10, Mem: sup.Mem * int64(rng.IntN(5)+8) / 10}
					if rng.IntN(2) == 0 {
						d.Mem = 0
					} else if rng.IntN(2) == 0 {
						d.Cores = 0
					}
					// Split in two entries: they add up.
					half := match.Resources{Cores: d.Cores / 2, Mem: d.Mem / 2}
					ds = append(ds, match.TagDemand{Facility: fac, Tag: strings.ToUpper(tag), Need: half},
						match.TagDemand{Facility: fac, Tag: " " + tag, Need: d.Sub(half)})
					pr.demand[tagKey{fac, tag}] = d
				}
			}
			f.r.hosts.SetDemand(ds)
		case 15:
			pr.fraction = []float64{0, 0.5, 1, 1.5}[rng.IntN(4)]
			f.r.hosts.SetPressureFraction(pr.fraction)
		}
		if rng.IntN(50) == 0 {
			now.set(now.Now().Add(time.Duration(rng.IntN(30)) * time.Second))
		}
		if len(cs) > 0 {
			f.apply(t, cs...)
		}
		checkIndex(t, f.r.hosts)
		cutoff := now.Now().Add(-time.Minute)
		for _, fac := range []string{"local", "cloud"} {
			for _, tag := range []string{"general", "render", "pool1", "gpu", "big"} {
				min := match.Resources{Cores: rng.Int64N(900), Mem: rng.Int64N(40 * gb), GPUs: rng.Int64N(2)}
				var got []string
				for _, h := range walkAll(f.r.hosts, fac, tag, min) {
					got = append(got, h.ID)
				}
				want := bruteWalk(models, taken, facilityOf, fac, tag, min, cutoff)
				if !slices.Equal(got, want) {
					t.Fatalf("step %d: Walk(%s, %s, %+v) = %v, want %v", step, fac, tag, min, got, want)
				}
				contested := pr.contested(models, taken, facilityOf, fac)
				var uncontested []string
				skipped := f.r.hosts.WalkUncontested(fac, tag, min, nil, func(h match.Host) bool {
					uncontested = append(uncontested, h.ID)
					return true
				})
				wantSkipped := false
				want = slices.DeleteFunc(want, func(id string) bool {
					for _, t := range models[id].tags {
						if t := normalizeTest(t); t != tag && contested[t] {
							wantSkipped = true
							return true
						}
					}
					return false
				})
				if len(contested) > 0 {
					avoidedWalks++
				}
				if wantSkipped {
					skippingWalks++
				}
				if !slices.Equal(uncontested, want) || wantSkipped && !skipped {
					t.Fatalf("step %d: WalkUncontested(%s, %s, %+v) = %v, %v, want %v, %v (contested %v)",
						step, fac, tag, min, uncontested, skipped, want, wantSkipped, contested)
				}
			}
			checkPressure(t, f.r.hosts, pr, models, taken, facilityOf, fac)
		}
		if t.Failed() {
			t.Fatalf("step %d", step)
		}
	}
	if avoidedWalks == 0 || skippingWalks == 0 {
		t.Fatalf("%d walks with contested tags, %d of them leaving hosts out: the test lost its reach", avoidedWalks, skippingWalks)
	}
	t.Logf("%d walks with contested tags, %d of them leaving hosts out", avoidedWalks, skippingWalks)
}

// TestEchoHoldsBookedCapacity: capacity booked by dispatch stays out of the
// index until the stream has applied the booking's commit position, in
// whichever order the echo and Booked arrive.
func TestEchoHoldsBookedCapacity(t *testing.T) {
	for _, echoFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("echo first %v", echoFirst), func(t *testing.T) {
			f := newFake(nil, 0)
			f.allocs(t)
			m := baseHost("h1", "a1")
			m.tags["t"] = "general"
			f.addHost(t, m)
			r := match.Resources{Cores: 800, Mem: 16 * gb}
			if !f.r.hosts.Take("h1", r) {
				t.Fatal("Take failed")
			}
			idleOf := func() match.Resources { h, _ := f.r.hosts.Host("h1"); return h.Idle }
			after := match.Resources{Cores: 800, Mem: 48 * gb}
			commit := f.lsn + 10  // the booking's commit record ends here...
			lsn := commit + 5     // ...and pg_current_wal_lsn() read after it lies beyond
			xid := uint32(commit) // the fake gives each transaction the xid of its end
			echo := func() {
				f.apply(t, f.update("host", "pk_host", "h1", "int_cores_idle", 800, "int_mem_idle", 48*gb))
			}
			if echoFirst {
				echo()
				if idle := idleOf(); idle.Cores > 0 || idle.Mem > 32*gb {
					t.Fatalf("echo applied before Booked: idle %+v, must not exceed what remains", idle)
				}
				f.r.hosts.Booked("h1", r, lsn, xid)
			} else {
				f.r.hosts.Booked("h1", r, lsn, xid)
				if idle := idleOf(); idle != after {
					t.Fatalf("after Booked: idle %+v, want %+v", idle, after)
				}
				echo()
			}
			// The echo is the booking's own transaction: from it on the row
			// is the truth, neither over- nor under-counted, although the
			// stream has not passed the position read after the commit.
			if idle := idleOf(); idle != after {
				t.Fatalf("echo applied, position %s < %s: idle %+v, want %+v", f.lsn, lsn, idle, after)
			}
			f.r.Advance(lsn)
			if idle := idleOf(); idle != after {
				t.Fatalf("after the stream passed the booking: idle %+v, want %+v", idle, after)
			}
			checkIndex(t, f.r.hosts)
		})
	}
}

// TestTakeRace: 8 matchers check out and in on hosts that sit in several
// indexes; no host ever has more checked out than it has.
func TestTakeRace(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	const hosts = 40
	for i := range hosts {
		m := baseHost(fmt.Sprintf("h%02d", i), "a1")
		m.tags["a"], m.tags["b"], m.tags["c"] = "general", fmt.Sprintf("pool%d", i%3), "shared"
		m.tags["d"] = m.name
		f.addHost(t, m)
	}
	var out [hosts]atomic.Int64 // cores checked out per host, as the matchers see it
	tags := []string{"general", "pool0", "pool1", "pool2", "shared"}
	var wg sync.WaitGroup
	var overs atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			type held struct {
				id string
				r  match.Resources
			}
			var mine []held
			for range 3000 {
				if len(mine) > 0 && rng.IntN(3) == 0 {
					k := rng.IntN(len(mine))
					h := mine[k]
					var n int
					fmt.Sscanf(h.id, "h%d", &n)
					out[n].Add(-h.r.Cores)
					f.r.hosts.Return(h.id, h.r)
					mine = append(mine[:k], mine[k+1:]...)
					continue
				}
				r := match.Resources{Cores: int64(rng.IntN(8)+1) * 100, Mem: int64(rng.IntN(4)+1) * gb}
				var cand string
				f.r.hosts.Walk("local", tags[rng.IntN(len(tags))], r, nil, func(h match.Host) bool {
					cand = h.ID
					return rng.IntN(4) == 0 // sometimes look further
				})
				if cand == "" || !f.r.hosts.Take(cand, r) {
					continue
				}
				var n int
				fmt.Sscanf(cand, "h%d", &n)
				if out[n].Add(r.Cores) > 1600 {
					overs.Add(1)
				}
				mine = append(mine, held{cand, r})
			}
			for _, h := range mine {
				var n int
				fmt.Sscanf(h.id, "h%d", &n)
				out[n].Add(-h.r.Cores)
				f.r.hosts.Return(h.id, h.r)
			}
		}()
	}
	wg.Wait()
	if n := overs.Load(); n > 0 {
		t.Fatalf("%d checkouts took a host over its capacity", n)
	}
	checkIndex(t, f.r.hosts)
	for i := range hosts {
		if h, _ := f.r.hosts.Host(fmt.Sprintf("h%02d", i)); h.Idle.Cores != 1600 || h.Idle.Mem != 64*gb {
			t.Fatalf("host %d idle %+v after every checkout came back", i, h.Idle)
		}
	}
}

// benchFarm is 10,000 hosts shaped like the peer stress farm (stressFarm).
func benchFarm(tb testing.TB) *fake { return stressFarm(tb, 10000) }

// stressFarm is n hosts shaped like the peer stress farm's: 16-128 cores,
// 32-256 GB, an allocation tag, one of 8 manual tags and a hostname tag.
func stressFarm(tb testing.TB, n int) *fake {
	f := newFake(nil, 0)
	f.allocs(tb)
	cores := []int64{1600, 3200, 6400, 12800}
	mems := []int64{32 * gb, 64 * gb, 128 * gb, 256 * gb}
	var cs []cdc.Change
	for i := range n {
		m := baseHost(fmt.Sprintf("host-%05d", i), []string{"a1", "a2"}[i%2])
		m.cores, m.coresIdle = cores[i%4], cores[i%4]
		m.mem, m.memIdle, m.memFree = mems[i%4], mems[i%4], mems[i%4]
		m.tags["alloc"], m.tags["manual"], m.tags["name"] = []string{"general", "render"}[i%2], fmt.Sprintf("pool%d", i%8), m.name
		cs = append(cs, f.hostRows(m)...)
		for k, v := range m.tags {
			cs = append(cs, f.insert("host_tag", "pk_host_tag", m.id+k, "pk_host", m.id, "str_tag", v))
		}
	}
	f.apply(tb, cs...)
	return f
}

// BenchmarkBestFit is one best-fit lookup (the first host of an ascending
// walk) on 10,000 hosts.
func BenchmarkBestFit(b *testing.B) {
	f := benchFarm(b)
	rng := rand.New(rand.NewPCG(1, 2))
	mins := make([]match.Resources, 1024)
	for i := range mins {
		mins[i] = match.Resources{Cores: int64(rng.IntN(16)+1) * 100, Mem: int64(rng.IntN(32)+1) * gb}
	}
	b.ReportAllocs()
	b.ResetTimer()
	found := 0
	for i := 0; i < b.N; i++ {
		f.r.hosts.Walk("local", "general", mins[i&1023], nil, func(match.Host) bool { found++; return false })
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	if found == 0 {
		b.Fatal("no host found")
	}
}

// BenchmarkTakeReturn is one checkout and checkin pair on 10,000 hosts,
// each in three indexes, re-indexing the host both times.
func BenchmarkTakeReturn(b *testing.B) {
	f := benchFarm(b)
	r := match.Resources{Cores: 100, Mem: gb}
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = fmt.Sprintf("host-%05d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := ids[i%len(ids)]
		if !f.r.hosts.Take(id, r) {
			b.Fatal("take failed")
		}
		f.r.hosts.Return(id, r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkPlacement is a best-fit lookup plus checkout per frame, until
// the farm is full (DESIGN.md's measurement), then the farm is reset.
func BenchmarkPlacement(b *testing.B) {
	f := benchFarm(b)
	benchPlacement(b, f, func(facility, tag string, min match.Resources, visit func(match.Host) bool) {
		f.r.hosts.Walk(facility, tag, min, nil, visit)
	})
}

// BenchmarkPlacementUncontested is BenchmarkPlacement with tag pressure
// on: half the manual tags are contested, so the walks (WalkUncontested)
// step over the hosts kept for them, a level at a time where a level holds
// nothing else.
func BenchmarkPlacementUncontested(b *testing.B) {
	f := benchFarm(b)
	var ds []match.TagDemand
	for i := range 4 {
		ds = append(ds, match.TagDemand{Facility: "local", Tag: fmt.Sprintf("pool%d", i), Need: match.Resources{Cores: 1 << 40}})
	}
	f.r.hosts.SetDemand(ds)
	benchPlacement(b, f, func(facility, tag string, min match.Resources, visit func(match.Host) bool) {
		f.r.hosts.WalkUncontested(facility, tag, min, nil, visit)
	})
}

func benchPlacement(b *testing.B, f *fake, walk func(facility, tag string, min match.Resources, visit func(match.Host) bool)) {
	min := match.Resources{Cores: 100, Mem: 2 * gb}
	var taken []string
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var id string
		walk("local", "general", min, func(h match.Host) bool { id = h.ID; return false })
		if id == "" || !f.r.hosts.Take(id, min) {
			b.StopTimer()
			for _, t := range taken {
				f.r.hosts.Return(t, min)
			}
			taken = taken[:0]
			b.StartTimer()
			continue
		}
		taken = append(taken, id)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkBytesPerHost reports the heap the index of 10,000 hosts holds,
// per host (three tags each; rows, records and trees).
func BenchmarkBytesPerHost(b *testing.B) {
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f := benchFarm(b)
		// Drop the transaction's change list: only the index stays.
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/10000, "B/host")
		runtime.KeepAlive(f)
	}
}

// BenchmarkTakeReturnParallel is BenchmarkTakeReturn from GOMAXPROCS
// goroutines at once (-cpu 8 for eight matchers): the cost of the one index
// lock under contention.
func BenchmarkTakeReturnParallel(b *testing.B) {
	f := benchFarm(b)
	r := match.Resources{Cores: 100, Mem: gb}
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = fmt.Sprintf("host-%05d", i)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			id := ids[i%len(ids)]
			i++
			if f.r.hosts.Take(id, r) {
				f.r.hosts.Return(id, r)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// TestHoldWithoutItsEchoWaitsForThePosition: when the host rows the stream
// applies come from another transaction (the booking's own echo not yet
// seen), the hold stays until the stream passes the booking's position, so
// the host is never offered with capacity already booked.
func TestHoldWithoutItsEchoWaitsForThePosition(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t"] = "general"
	f.addHost(t, m)
	r := match.Resources{Cores: 800, Mem: 16 * gb}
	if !f.r.hosts.Take("h1", r) {
		t.Fatal("Take failed")
	}
	lsn := f.lsn + 100
	f.r.hosts.Booked("h1", r, lsn, 99999) // an xid the fake never gives
	f.apply(t, f.update("host", "pk_host", "h1", "int_cores_idle", 800, "int_mem_idle", 48*gb))
	h, _ := f.r.hosts.Host("h1")
	if h.Idle.Cores > 800 || h.Idle.Mem > 48*gb {
		t.Fatalf("idle %+v offers booked capacity before the booking's position", h.Idle)
	}
	f.r.Advance(lsn)
	if h, _ := f.r.hosts.Host("h1"); h.Idle != (match.Resources{Cores: 800, Mem: 48 * gb}) {
		t.Fatalf("after the position: idle %+v", h.Idle)
	}
	checkIndex(t, f.r.hosts)
}

// pressureModel is the test's own idea of tag pressure.
type pressureModel struct {
	demand   map[tagKey]match.Resources
	fraction float64
}

// contested is the facility's contested tags, from brute-force supply.
func (pr pressureModel) contested(models map[string]*hostModel, taken map[string]match.Resources,
	facilityOf map[string]string, facility string) map[string]bool {
	out := map[string]bool{}
	for k, d := range pr.demand {
		if k.facility != facility || pr.fraction <= 0 {
			continue
		}
		sup := bruteSupply(models, taken, facilityOf, facility, k.tag)
		carried := false
		for _, m := range models {
			for _, t := range m.tags {
				carried = carried || facilityOf[m.alloc] == facility && normalizeTest(t) == k.tag
			}
		}
		if carried && (d.Cores > 0 && float64(d.Cores) >= pr.fraction*float64(sup.Cores) ||
			d.Mem > 0 && float64(d.Mem) >= pr.fraction*float64(sup.Mem)) {
			out[k.tag] = true
		}
	}
	return out
}

// bruteSupply sums the idle cores and memory of the offered hosts of the
// facility carrying tag. Supply counts hosts filed in the index, stale or
// not: staleness is the walk's check, against the clock.
func bruteSupply(models map[string]*hostModel, taken map[string]match.Resources, facilityOf map[string]string,
	facility, tag string) match.Resources {
	var sup match.Resources
	for _, m := range models {
		if facilityOf[m.alloc] != facility {
			continue
		}
		carries := false
		for _, t := range m.tags {
			carries = carries || normalizeTest(t) == tag
		}
		if idle, ok := offeredModel(m, taken[m.id], time.Time{}); carries && ok {
			sup.Cores += idle.Cores
			sup.Mem += idle.Mem
		}
	}
	return sup
}

// checkPressure compares every tag's supply, demand and verdict with brute
// force, and every filed host's contested count and every level's counts
// with a recount.
func checkPressure(tb testing.TB, h *Hosts, pr pressureModel, models map[string]*hostModel,
	taken map[string]match.Resources, facilityOf map[string]string, facility string) {
	tb.Helper()
	contested := pr.contested(models, taken, facilityOf, facility)
	for _, tag := range []string{"general", "render", "pool1", "gpu", "big", "nohost"} {
		supply, demand, c := h.Pressure(facility, tag)
		want := bruteSupply(models, taken, facilityOf, facility, tag)
		if supply != want || demand != pr.demand[tagKey{facility, tag}] || c != contested[tag] {
			tb.Fatalf("Pressure(%s, %s) = %+v, %+v, %v; want supply %+v, demand %+v, contested %v",
				facility, tag, supply, demand, c, want, pr.demand[tagKey{facility, tag}], contested[tag])
		}
	}
	checkLevels(tb, h)
}

// A host tag with whitespace inside (issue 12: odd spacing) stands for each
// of its words, as in Cuebot's host.str_tags (the host's tags joined by
// spaces, which layers' tags are matched against); odd case and outer
// spaces are normalized, and regular-expression metacharacters are literal.
func TestHostTagsWithOddSpacingAndCase(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t1"], m.tags["t2"] = "  Big \t MEM ", "A.B"
	f.addHost(t, m)
	for tag, want := range map[string]int{"big": 1, "mem": 1, "big mem": 0, "bigmem": 0, "a.b": 1, "axb": 0} {
		if got := walkAll(f.r.hosts, "local", tag, match.Resources{}); len(got) != want {
			t.Errorf("walk of tag %q: %d hosts, want %d", tag, len(got), want)
		}
	}
	f.apply(t, f.del("host_tag", "t1"))
	for _, tag := range []string{"big", "mem"} {
		if f.r.hosts.Tagged("local", tag) {
			t.Errorf("tag %q still indexed once its host_tag row is gone", tag)
		}
	}
	checkIndex(t, f.r.hosts)
}

// Cuebot compares host.int_thread_mode with ALL (1) and VARIABLE (2) as an
// integer: any other value (issue 12: odd rows) sizes procs as AUTO, never
// wrapped around into another mode.
func TestUnknownThreadModesAreAuto(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t1"] = "general"
	f.addHost(t, m)
	for mode, want := range map[int64]match.ThreadMode{1: match.ThreadAll, 2: match.ThreadVariable, 0: match.ThreadAuto,
		3: match.ThreadAuto, -1: match.ThreadAuto, 257: match.ThreadAuto, 258: match.ThreadAuto} {
		f.apply(t, f.update("host", "pk_host", "h1", "int_thread_mode", mode))
		if h, _ := f.r.hosts.Host("h1"); h.ThreadMode != want {
			t.Errorf("int_thread_mode %d read as %d, want %d", mode, h.ThreadMode, want)
		}
	}
}
