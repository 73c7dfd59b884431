package cache

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// BenchmarkPlan is issue 5's placements per second through the real index:
// match.Plan over this package's Hosts and Usage, 10,000 hosts (benchFarm)
// and 2,000 pending layers shaped like the peer stress farm's (500 jobs x 4
// threadable layers, minimums cycling 1/2/4/8 cores and 2/4/8/16 GB, a third
// tagged with a manual tag, the rest with an allocation tag, priorities
// 1-100), 100 waiting frames each, more than the farm holds. One op is one
// round from an empty farm until it is full, checkout and re-indexing
// included; the capacity is given back untimed between ops.
func BenchmarkPlan(b *testing.B) {
	f := benchFarm(b)
	f.apply(b, f.insert("show", "pk_show", "s1", "b_active", true, "b_scheduler_managed", true),
		f.insert("subscription", "pk_subscription", "sub1", "pk_show", "s1", "pk_alloc", "a1",
			"int_size", int64(1)<<40, "int_burst", int64(1)<<40),
		f.insert("subscription", "pk_subscription", "sub2", "pk_show", "s1", "pk_alloc", "a2",
			"int_size", int64(1)<<40, "int_burst", int64(1)<<40))
	// A third of the layers carry a manual tag, the rest an allocation's.
	layers := matchtest.StressLayers(2000, 100, "s1", "f1", func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("pool%d", (i/3)%8)
		}
		return []string{"general", "render"}[i%2]
	})
	// Fresh result slices every round, and handed back (Buffer) as a
	// steady-state caller would.
	for _, reuse := range []bool{false, true} {
		name := "fresh"
		if reuse {
			name = "reuse"
		}
		b.Run(name, func(b *testing.B) {
			placed := 0
			var buf []match.Placement
			for b.Loop() {
				opt := match.Options{Seed: 1, Allocs: []string{"a1", "a2"}}
				if reuse {
					opt.Buffer = buf
				}
				res := match.Plan(layers, f.r.hosts, f.r.usage, opt)
				placed += len(res.Placements)
				b.StopTimer()
				if len(res.Placements) == 0 {
					b.Fatalf("nothing placed: %v", res.Waits)
				}
				for _, p := range res.Placements {
					f.r.hosts.Return(p.Host.ID, p.Size)
				}
				buf = res.Placements
				b.StartTimer()
			}
			rate := float64(placed) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "placements/s")
			// Issue 5's target, on one core (-cpu 1), for the rounds the
			// scheduler runs (it hands its buffer back).
			if reuse && runtime.GOMAXPROCS(0) == 1 && rate < 1_000_000 {
				b.Errorf("%.0f placements/s, target at least 1,000,000 on one core", rate)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(placed), "ns/placement")
		})
	}
}

// BenchmarkPlanLocality is BenchmarkPlan's round (buffer handed back) with
// locality off and on, alternating in the same loop over the same index so a
// machine's load drifting falls on both alike (which goes first alternating): each host remembers frames of
// 4 of the layers (booked and released, so every layer and job has warm
// hosts), and with locality on every placement asks for its layer's warm
// hosts. It reports each one's placements per second and on/off, their
// ratio.
func BenchmarkPlanLocality(b *testing.B) {
	f := benchFarm(b)
	f.apply(b, f.insert("show", "pk_show", "s1", "b_active", true, "b_scheduler_managed", true),
		f.insert("subscription", "pk_subscription", "sub1", "pk_show", "s1", "pk_alloc", "a1",
			"int_size", int64(1)<<40, "int_burst", int64(1)<<40),
		f.insert("subscription", "pk_subscription", "sub2", "pk_show", "s1", "pk_alloc", "a2",
			"int_size", int64(1)<<40, "int_burst", int64(1)<<40))
	layers := matchtest.StressLayers(2000, 100, "s1", "f1", func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("pool%d", (i/3)%8)
		}
		return []string{"general", "render"}[i%2]
	})
	for i := range 10000 {
		id := fmt.Sprintf("host-%05d", i)
		for k := range 4 {
			l := layers[(i*7+k*501)%len(layers)]
			f.r.hosts.ProcBooked(id, l.ID, l.JobID)
			f.r.hosts.ProcReleased(id, l.ID, l.JobID)
		}
	}
	var placed, won [2]int
	var spent [2]time.Duration
	var buf []match.Placement
	first := 0
	for b.Loop() {
		// Which goes first alternates too: a round runs faster after another.
		first = 1 - first
		for _, i := range []int{first, 1 - first} {
			locality := i == 1
			opt := match.Options{Seed: 1, Allocs: []string{"a1", "a2"}, Now: epoch, Locality: locality, Buffer: buf}
			began := time.Now()
			res := match.Plan(layers, f.r.hosts, f.r.usage, opt)
			spent[i] += time.Since(began)
			placed[i] += len(res.Placements)
			b.StopTimer()
			for _, p := range res.Placements {
				if p.Warm != match.Cold {
					won[i]++
				}
				f.r.hosts.Return(p.Host.ID, p.Size)
			}
			buf = res.Placements
			b.StartTimer()
		}
	}
	if won[1] == 0 {
		b.Fatal("no placement chosen by warmth")
	}
	off := float64(placed[0]) / spent[0].Seconds()
	on := float64(placed[1]) / spent[1].Seconds()
	b.ReportMetric(off, "off-placements/s")
	b.ReportMetric(on, "on-placements/s")
	b.ReportMetric(on/off, "on/off")
	b.ReportMetric(float64(won[1])/float64(placed[1]), "warm-won")
}
