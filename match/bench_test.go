package match_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// benchFarm is DESIGN.md's peer stress farm scaled to 10,000 hosts and 2,000
// pending layers: hosts cycle 16/32/64/128 cores and 32/64/128/256 GB, each
// in one of 3 allocations (its ALLOC tag) with one of 8 manual tags and its
// hostname tag; one show subscribed to all three with a burst above the farm;
// 500 jobs x 4 threadable layers, minimums cycling 1/2/4/8 cores and
// 2/4/8/16 GB, a third tagged with a manual tag and the rest with an
// allocation tag, job priorities 1-100. Each layer has 100 waiting frames
// (200,000 in all, more than the farm holds), so a round runs until the farm
// is full and every layer has placed or waits.
func benchFarm(nHosts, nLayers, frames int) ([]match.Host, []*match.Layer, *matchtest.Caps) {
	allocs := []string{"alloc0", "alloc1", "alloc2"}
	hosts := make([]match.Host, nHosts)
	for i := range hosts {
		name := fmt.Sprintf("host%05d", i)
		r := match.Resources{Cores: int64(1600) << (i % 4), Mem: int64(32*gb) << ((i / 4) % 4)}
		tags := []string{allocs[i%3], fmt.Sprintf("manual%d", i%8), name}
		slices.Sort(tags)
		hosts[i] = match.Host{
			ID: name, Name: name, Facility: "local", Alloc: allocs[i%3], OS: "linux", Tags: tags,
			Total: r, Idle: r, MemFree: r.Mem, TempFree: 100 * gb, TempTotal: 200 * gb,
		}
	}
	caps := matchtest.NewCaps()
	for _, a := range allocs {
		caps.Subs[matchtest.SubKey{Show: "show", Alloc: a}] = match.Subscription{Size: 1 << 40, Burst: 1 << 40}
	}
	layers := matchtest.StressLayers(nLayers, frames, "show", "folder", func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("manual%d", (i/3)%8)
		}
		return allocs[i%3]
	})
	return hosts, layers, caps
}

// BenchmarkPlan reports placements per second as DESIGN.md defines them:
// frames placed by matching, checkout (Hosts.Take) and re-indexing included,
// over an index built before timing starts. One op is one full round on a
// fresh farm.
func BenchmarkPlan(b *testing.B) {
	hosts, layers, caps := benchFarm(10000, 2000, 100)
	for _, bc := range []struct {
		name string
		opt  match.Options
	}{
		{"bestfit", match.Options{Seed: 1, Allocs: []string{"alloc0", "alloc1", "alloc2"}}},
		{"strict", match.Options{Seed: 1, Order: match.OrderStrict, Allocs: []string{"alloc0", "alloc1", "alloc2"}}},
		{"epvm", match.Options{Seed: 1, Policy: match.NewEPVM(0, 0), Allocs: []string{"alloc0", "alloc1", "alloc2"}}},
	} {
		// Fresh result slices every round, and then handed back (Buffer) as a
		// steady-state caller would.
		for _, reuse := range []bool{false, true} {
			name := bc.name
			if reuse {
				name += "-reuse"
			}
			b.Run(name, func(b *testing.B) {
				placed := 0
				var buf []match.Placement
				for b.Loop() {
					b.StopTimer()
					idx := matchtest.NewHosts(hosts)
					opt := bc.opt
					if reuse {
						opt.Buffer = buf
					}
					b.StartTimer()
					res := match.Plan(layers, idx, caps, opt)
					placed += len(res.Placements)
					buf = res.Placements
				}
				b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(placed), "ns/placement")
			})
		}
	}
}

func BenchmarkSize(b *testing.B) {
	h := &match.Host{Total: match.Resources{Cores: 6400, Mem: 256 * gb}, Idle: match.Resources{Cores: 3200, Mem: 100 * gb}}
	l := &match.Layer{Min: match.Resources{Cores: 200, Mem: 8 * gb}, Threadable: true}
	for b.Loop() {
		if _, ok := match.Size(h, l, false); !ok {
			b.Fatal("refused")
		}
	}
}
