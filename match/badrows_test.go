package match_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// TestOddRows: values Cuebot's schema allows but no sane job or host has
// (issue 12: negative, zero and huge resources, tags with regular-expression
// metacharacters, odd case and spacing, unknown OS strings, a zero burst)
// are either placed where Cuebot would book them or left waiting, never
// placed on a host Cuebot would not use or with a size a rule forbids.
func TestOddRows(t *testing.T) {
	host := func(name string, tags ...string) match.Host {
		return match.Host{ID: name, Name: name, Facility: "local", Alloc: "a", OS: "linux", Tags: tags,
			Total:   match.Resources{Cores: 800, Mem: 16 * gb},
			Idle:    match.Resources{Cores: 800, Mem: 16 * gb},
			MemFree: 16 * gb, TempFree: gb, TempTotal: gb}
	}
	huge := host("huge", "huge")
	huge.ThreadMode = match.ThreadAll // takes all its whole idle cores
	huge.Total.Cores, huge.Idle.Cores = 1<<40, 1<<40
	hosts := []match.Host{host("gen1", "gen", "gen1"), host("axb", "axb"), host("a.b", "a.b"), host("c++", "c++"),
		host("gpu1", "gpu"), huge}
	hosts[4].Total.GPUs, hosts[4].Idle.GPUs = 2, 2

	ok := match.Resources{Cores: 100, Mem: gb}
	for _, tc := range []struct {
		name  string
		tags  string
		min   match.Resources
		os    string
		prio  int64
		max   int64  // layer.int_cores_max
		burst *int64 // nil: a burst of 1e9
		limit *match.Limit
		// onHost is where it is placed; "" means it waits for reason.
		onHost string
		cores  int64 // the placed proc's cores
		reason match.Reason
	}{
		{name: "odd case and spacing", tags: "  GEN  |Gen", min: ok, onHost: "gen1", cores: 100},
		{name: "whitespace inside a tag is ignored, as Cuebot's expanded regex does", tags: "g e\tn", min: ok,
			onHost: "gen1", cores: 100},
		{name: "a dot is taken literally", tags: "a.b", min: ok, onHost: "a.b", cores: 100},
		{name: "a plus is taken literally", tags: "C++", min: ok, onHost: "c++", cores: 100},
		{name: "a wildcard matches no host", tags: ".*", min: ok, reason: match.ReasonNoHost},
		{name: "a regex alternation matches no host", tags: "(gen|axb)", min: ok, reason: match.ReasonNoHost},
		{name: "a regex escape matches no host", tags: `gen\y`, min: ok, reason: match.ReasonNoHost},
		{name: "empty tags match no host", tags: " | ", min: ok, reason: match.ReasonNoHost},
		{name: "zero cores takes a whole idle host", tags: "gen", min: match.Resources{Mem: gb}, onHost: "gen1",
			cores: 800},
		{name: "negative cores take all but that many", tags: "gen", min: match.Resources{Cores: -100, Mem: gb},
			onHost: "gen1", cores: 700},
		{name: "most negative cores fit no host", tags: "gen", min: match.Resources{Cores: math.MinInt64, Mem: gb},
			reason: match.ReasonNoFit},
		{name: "huge cores are over any burst", tags: "gen", min: match.Resources{Cores: math.MaxInt64, Mem: gb},
			reason: match.ReasonCap},
		{name: "huge cores fit no host", tags: "gen", min: match.Resources{Cores: math.MaxInt64, Mem: gb},
			burst: ptr(math.MaxInt64), reason: match.ReasonNoFit},
		{name: "huge memory fits no host", tags: "gen", min: match.Resources{Cores: 100, Mem: math.MaxInt64},
			reason: match.ReasonNoFit},
		{name: "negative memory is never placed", tags: "gen", min: match.Resources{Cores: 100, Mem: -gb},
			reason: match.ReasonNoFit},
		{name: "negative GPUs are never placed", tags: "gpu", min: match.Resources{Cores: 100, Mem: gb, GPUs: -1},
			reason: match.ReasonNoFit},
		{name: "negative GPU memory is never placed", tags: "gen",
			min: match.Resources{Cores: 100, Mem: gb, GPUMem: -1}, reason: match.ReasonNoFit},
		{name: "huge GPUs fit no host", tags: "gpu", min: match.Resources{Cores: 100, Mem: gb, GPUs: math.MaxInt64},
			reason: match.ReasonNoFit},
		{name: "a proc larger than a counter holds is not placed", tags: "huge", min: ok, reason: match.ReasonNoFit},
		{name: "zero burst", tags: "gen", min: ok, burst: ptr(0), reason: match.ReasonCap},
		{name: "negative burst", tags: "gen", min: ok, burst: ptr(-100), reason: match.ReasonCap},
		{name: "huge burst", tags: "gen", min: ok, burst: ptr(math.MaxInt64), onHost: "gen1", cores: 100},
		{name: "limit of zero", tags: "gen", min: ok, limit: &match.Limit{Max: 0}, reason: match.ReasonCap},
		{name: "negative limit", tags: "gen", min: ok, limit: &match.Limit{Max: -5}, reason: match.ReasonCap},
		{name: "unknown OS", tags: "gen", min: ok, os: "SuSE-13", reason: match.ReasonNoFit},
		{name: "OS in another case (Cuebot compares exactly)", tags: "gen", min: ok, os: "Linux",
			reason: match.ReasonNoFit},
		{name: "OS with spaces", tags: "gen", min: ok, os: " linux", reason: match.ReasonNoFit},
		{name: "the host's OS", tags: "gen", min: ok, os: "linux", onHost: "gen1", cores: 100},
		{name: "negative priority", tags: "gen", min: ok, prio: math.MinInt32, onHost: "gen1", cores: 100},
		{name: "huge priority", tags: "gen", min: ok, prio: math.MaxInt64, onHost: "gen1", cores: 100},
		{name: "negative cores max means none", tags: "gen", min: match.Resources{Cores: 200, Mem: gb}, max: -100,
			onHost: "gen1", cores: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tags := match.ParseTags(tc.tags)
			if want := cluster.SplitLayerTags(tc.tags); !slices.Equal(tags, want) {
				t.Fatalf("match reads tags %q as %q, the queue as %q", tc.tags, tags, want)
			}
			l := &match.Layer{ID: "l", JobID: "j", ShowID: "s", FolderID: "f", Facility: "local", Priority: tc.prio,
				OS: tc.os, Tags: tags, Min: tc.min, CoresMax: tc.max, Threadable: true,
				Frames: []match.Frame{{ID: "f1"}}}
			caps := matchtest.NewCaps()
			burst := int64(1e9)
			if tc.burst != nil {
				burst = *tc.burst
			}
			caps.Subs[matchtest.SubKey{Show: "s", Alloc: "a"}] = match.Subscription{Size: 100, Burst: burst}
			if tc.limit != nil {
				l.Limits = []string{"lim"}
				caps.Limits["lim"] = *tc.limit
			}
			res := match.Plan([]*match.Layer{l}, matchtest.NewHosts(hosts), caps, match.Options{Allocs: []string{"a"}})
			if tc.onHost == "" {
				if len(res.Placements) != 0 {
					t.Fatalf("placed %+v, want a wait for %s", res.Placements, tc.reason)
				}
				if len(res.Waits) != 1 || res.Waits[0].Reason != tc.reason {
					t.Fatalf("waits %+v, want one for %s", res.Waits, tc.reason)
				}
				return
			}
			if len(res.Placements) != 1 {
				t.Fatalf("placements %+v (waits %+v), want one on %s", res.Placements, res.Waits, tc.onHost)
			}
			p := res.Placements[0]
			if p.Host.Name != tc.onHost || p.Size.Cores != tc.cores || p.Size.Mem != tc.min.Mem {
				t.Fatalf("placed on %s with %+v, want %s with %d cores and the layer's memory", p.Host.Name, p.Size,
					tc.onHost, tc.cores)
			}
		})
	}
}

func ptr(n int64) *int64 { return &n }

// oddify gives some of a random farm's layers and hosts the odd values of
// TestOddRows (issue 12), so FuzzPlan checks that no rule breaks on them
// either. It draws from a generator of its own: the farm's other values stay
// what the seed made them.
func oddify(f *randomFarm, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x0dd))
	for _, l := range f.layers {
		if r.IntN(8) != 0 {
			continue
		}
		switch r.IntN(8) {
		case 0:
			l.Min.Mem = -gb
		case 1:
			l.Min.GPUs = -1
		case 2:
			l.Min.GPUMem = -1
		case 3:
			l.Min.Cores = pick(r, int64(math.MaxInt64), math.MinInt64)
		case 4:
			l.Min.Mem = math.MaxInt64
		case 5:
			l.Min.GPUs = math.MaxInt64
		case 6:
			l.Priority = pick(r, int64(math.MaxInt64), math.MinInt64)
		case 7:
			l.OS = "Linux" // no host reports it: Cuebot compares exactly
		}
	}
	for i := range f.hosts {
		if r.IntN(10) != 0 {
			continue
		}
		// More cores than a proc can hold, taken whole (ALL) or sized.
		h := &f.hosts[i]
		h.Total.Cores, h.Idle.Cores = 1<<40, 1<<40-r.Int64N(1000)
		h.ThreadMode = pick(r, match.ThreadAll, match.ThreadAuto)
	}
}
