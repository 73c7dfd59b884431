package match_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// randomFarm is a small random farm, layers and caps, consistent enough to be
// real (idle within total) and rough enough to hit every rule: GPUs, thread
// modes, OSes, host minimums, absent subscriptions, zero bursts, caps at or
// over their max, fractional and whole-host requests.
type randomFarm struct {
	hosts  []match.Host
	layers []*match.Layer
	caps   *matchtest.Caps
	opt    match.Options
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func newRandomFarm(seed uint64, nHosts, nLayers int) *randomFarm {
	r := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &randomFarm{caps: matchtest.NewCaps()}
	allocs := []string{"a1", "a2", "a3"}
	for i := range nHosts {
		cores := pick(r, int64(50), 100, 400, 800, 1600, 3200, 6400)
		mem := pick(r, int64(gb/2), 4*gb, 16*gb, 64*gb, 256*gb)
		gpus := pick(r, int64(0), 0, 0, 1, 4)
		gpuMem := gpus * 8 * gb
		alloc := pick(r, allocs...)
		name := fmt.Sprintf("h%03d", i)
		tags := []string{alloc, name, pick(r, "m1", "m2", "m3")}
		slices.Sort(tags)
		total := match.Resources{Cores: cores, Mem: mem, GPUs: gpus, GPUMem: gpuMem}
		idle := total
		if r.IntN(2) == 0 {
			idle = match.Resources{Cores: r.Int64N(cores + 1), Mem: r.Int64N(mem + 1), GPUs: r.Int64N(gpus + 1), GPUMem: r.Int64N(gpuMem + 1)}
		}
		f.hosts = append(f.hosts, match.Host{
			ID: name, Name: name, Facility: pick(r, "f1", "f1", "f1", "f2"), Alloc: alloc,
			OS: pick(r, "linux", "linux", "linux", "rocky", "Windows"), ThreadMode: match.ThreadMode(r.IntN(3)),
			Tags: tags, Total: total, Idle: idle,
			MemFree:  pick(r, int64(gb/4), 2*gb, 64*gb, 64*gb),
			TempFree: pick(r, int64(0), gb, 50*gb, 50*gb), TempTotal: pick(r, int64(0), 100*gb, 100*gb),
		})
	}
	shows := []string{"s1", "s2", "s3"}
	generous := r.IntN(2) == 0 // half the farms have caps that rarely stop anything
	for _, s := range shows {
		for _, a := range allocs {
			if !generous && r.IntN(5) == 0 {
				continue // no subscription row
			}
			burst := pick(r, int64(0), 500, 2000, 20000, 1<<40, 1<<40, 1<<40)
			if generous {
				burst = 1 << 40
			}
			f.caps.Subs[matchtest.SubKey{Show: s, Alloc: a}] = match.Subscription{
				Size: pick(r, int64(0), 1000, 10000), Burst: burst, Cores: r.Int64N(burst/2 + 2),
			}
		}
	}
	jobShow := map[string]string{}
	for j := range 6 {
		id := fmt.Sprintf("j%d", j)
		jobShow[id] = pick(r, shows...)
		// A job's negative max refuses everything (Cuebot's job guard);
		// NoMax is a job without one.
		max := pick(r, match.NoMax, match.NoMax, match.NoMax, -1, 0, 300, 2000)
		if generous {
			max = match.NoMax
		}
		f.caps.Jobs[id] = match.Cap{Cores: r.Int64N(400), MaxCores: max, GPUs: r.Int64N(3), MaxGPUs: pick(r, match.NoMax, -1, 0, 2, 4)}
	}
	for _, fo := range []string{"fo1", "fo2"} {
		f.caps.Folders[fo] = match.Cap{Cores: r.Int64N(400), MaxCores: pick(r, int64(-1), 500, 3000), MaxGPUs: pick(r, int64(-1), 1)}
	}
	f.caps.Limits["lim1"] = match.Limit{Running: r.Int64N(3), Max: pick(r, int64(0), 2, 5, 50, 500)}
	f.caps.Limits["lim2"] = match.Limit{Running: r.Int64N(3), Max: pick(r, int64(1), 10)}
	for i := range nLayers {
		job := fmt.Sprintf("j%d", r.IntN(6))
		l := &match.Layer{
			ID: fmt.Sprintf("l%03d", i), JobID: job, ShowID: jobShow[job], FolderID: pick(r, "fo1", "fo2", "fo3"),
			Facility: pick(r, "f1", "f1", "f2"), Priority: pick(r, int64(0), 1, 10, 100, 1000),
			OS:         pick(r, "", "", "", "linux", "rocky", "windows"),
			Min:        match.Resources{Cores: pick(r, int64(-200), 0, 30, 100, 100, 200, 400, 800), Mem: pick(r, int64(gb/4), gb, 8*gb, 32*gb), GPUs: pick(r, int64(0), 0, 0, 1)},
			CoresMax:   pick(r, int64(0), 0, 200, 600),
			Threadable: r.IntN(3) > 0,
			Services:   []string{pick(r, "default", "sim")},
		}
		if l.Min.GPUs > 0 {
			l.Min.GPUMem = pick(r, int64(0), 4*gb)
		}
		for _, t := range []string{"a1", "a2", "a3", "m1", "m2", "m3", "nosuch"} {
			if r.IntN(4) == 0 {
				l.Tags = append(l.Tags, t)
			}
		}
		for _, lim := range []string{"lim1", "lim2", "lim3"} {
			if r.IntN(6) == 0 {
				l.Limits = append(l.Limits, lim)
			}
		}
		switch r.IntN(8) {
		case 0:
			l.StartAfter = now.Add(time.Hour)
		case 1:
			l.StartAfter = now.Add(-time.Hour)
		}
		for k := range 1 + r.IntN(20) {
			l.Frames = append(l.Frames, match.Frame{ID: fmt.Sprintf("%s/%d", l.ID, k)})
		}
		f.layers = append(f.layers, l)
	}
	f.opt = match.Options{Now: now, Seed: int64(seed), SelfishServices: []string{"sim"}}
	if r.IntN(2) == 0 {
		f.opt.Policy = match.NewEPVM(0, 4)
	}
	if r.IntN(3) == 0 {
		f.opt.Order = match.OrderStrict
	}
	if r.IntN(2) == 0 {
		f.opt.Allocs = allocs
	}
	if r.IntN(4) == 0 {
		f.opt.MaxPlacements = 1 + r.IntN(30)
	}
	return f
}

// FuzzPlan checks a round against an independent recomputation: replaying the
// placements in order over the farm as it was, no host goes below zero or
// below Cuebot's minimums, every rule held, no cap is passed, every frame is
// placed at most once and in order, and every layer left with frames says why.
func FuzzPlan(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 1234} {
		f.Add(s, uint8(20), uint8(15))
	}
	f.Fuzz(func(t *testing.T, seed uint64, nHosts, nLayers uint8) {
		farm := newRandomFarm(seed, int(nHosts%64)+1, int(nLayers%40)+1)
		oddify(farm, seed)
		// The caps as they were, kept apart from the fakes Plan reads.
		subs0 := map[matchtest.SubKey]match.Subscription{}
		for k, v := range farm.caps.Subs {
			subs0[k] = v
		}
		jobs0, folders0, limits0 := cloneMap(farm.caps.Jobs), cloneMap(farm.caps.Folders), cloneMap(farm.caps.Limits)
		idle := map[string]match.Resources{}
		byID := map[string]match.Host{}
		for _, h := range farm.hosts {
			idle[h.ID] = h.Idle
			byID[h.ID] = h
		}
		res := match.Plan(farm.layers, matchtest.NewHosts(farm.hosts), farm.caps, farm.opt)

		if m := farm.opt.MaxPlacements; m > 0 && len(res.Placements) > m {
			t.Fatalf("%d placements above the bound %d", len(res.Placements), m)
		}
		subAdd := map[matchtest.SubKey]int64{}
		jobAdd := map[string]match.Resources{}
		folderAdd := map[string]match.Resources{}
		limitAdd := map[string]int64{}
		placed := map[*match.Layer]int{}
		for i, p := range res.Placements {
			l, h0 := p.Layer, byID[p.Host.ID]
			before := idle[h0.ID]
			if p.Host.Idle != before {
				t.Fatalf("#%d: placement saw idle %+v, replay has %+v", i, p.Host.Idle, before)
			}
			// Frames in order, each once.
			if n := placed[l]; n >= len(l.Frames) || p.Frame != l.Frames[n] {
				t.Fatalf("#%d: frame %s of %s out of order", i, p.Frame.ID, l.ID)
			}
			placed[l]++
			// Rules, recomputed.
			hasTag := false
			for _, lt := range l.Tags {
				hasTag = hasTag || slices.ContainsFunc(h0.Tags, func(ht string) bool { return strings.EqualFold(lt, ht) })
			}
			switch {
			case !hasTag:
				t.Fatalf("#%d: %s on %s shares no tag", i, l.ID, h0.ID)
			case h0.Facility != l.Facility:
				t.Fatalf("#%d: facility %s for a layer of %s", i, h0.Facility, l.Facility)
			case l.OS != "" && l.OS != h0.OS:
				t.Fatalf("#%d: os %s for job os %s", i, h0.OS, l.OS)
			case h0.ThreadMode == match.ThreadAll && !l.Threadable:
				t.Fatalf("#%d: non-threadable layer on an ALL-mode host", i)
			case before.Cores < 10 || before.Mem < 262144 || h0.MemFree < 524288:
				t.Fatalf("#%d: host %s under Cuebot's minimums (%+v, free %d)", i, h0.ID, before, h0.MemFree)
			case !strings.EqualFold(h0.OS, "windows") && !(h0.TempTotal > 0 && h0.TempFree*100 >= 5*h0.TempTotal || h0.TempTotal <= 0 && h0.TempFree > 0):
				t.Fatalf("#%d: host %s short of temp space", i, h0.ID)
			case !l.StartAfter.IsZero() && l.StartAfter.After(farm.opt.Now):
				t.Fatalf("#%d: %s placed before its start-after", i, l.ID)
			case p.Size.Cores <= 0 || p.Size.Cores > math.MaxInt32:
				t.Fatalf("#%d: proc of %d cores", i, p.Size.Cores)
			case p.Size.Mem < 0 || p.Size.GPUs < 0 || p.Size.GPUs > math.MaxInt32 || p.Size.GPUMem < 0:
				t.Fatalf("#%d: proc of %+v", i, p.Size)
			case p.Size.Mem != l.Min.Mem || p.Size.GPUs != l.Min.GPUs || p.Size.GPUMem != l.Min.GPUMem:
				t.Fatalf("#%d: size %+v is not the layer's minimums %+v", i, p.Size, l.Min)
			case !l.Threadable && p.Size.Cores > 100:
				t.Fatalf("#%d: non-threadable proc of %d cores", i, p.Size.Cores)
			case l.Min.Cores <= 0 && before.Cores != h0.Total.Cores:
				t.Fatalf("#%d: whole-host request on a busy host", i)
			}
			// No over-commit.
			after := before.Sub(p.Size)
			if after.Cores < 0 || after.Mem < 0 || after.GPUs < 0 || after.GPUMem < 0 {
				t.Fatalf("#%d: host %s over-committed: %+v - %+v", i, h0.ID, before, p.Size)
			}
			idle[h0.ID] = after
			// Caps, counted independently.
			sk := matchtest.SubKey{Show: l.ShowID, Alloc: h0.Alloc}
			sub, ok := subs0[sk]
			subAdd[sk] += p.Size.Cores
			if !ok || sub.Burst <= 0 || sub.Cores+subAdd[sk] > sub.Burst {
				t.Fatalf("#%d: show %s on %s past its burst (%+v, +%d, found %v)", i, l.ShowID, h0.Alloc, sub, subAdd[sk], ok)
			}
			jobAdd[l.JobID] = jobAdd[l.JobID].Add(p.Size)
			jc, known := jobs0[l.JobID]
			checkCap(t, i, "job "+l.JobID, jc, known, jobAdd[l.JobID], false)
			folderAdd[l.FolderID] = folderAdd[l.FolderID].Add(p.Size)
			fc, known := folders0[l.FolderID]
			checkCap(t, i, "folder "+l.FolderID, fc, known, folderAdd[l.FolderID], true)
			for _, id := range l.Limits {
				limitAdd[id]++
				if lim, ok := limits0[id]; ok && lim.Running+limitAdd[id] > lim.Max {
					t.Fatalf("#%d: limit %s past its max (%+v, +%d)", i, id, lim, limitAdd[id])
				}
			}
		}
		// Every layer left with frames says why, once; no other layer does.
		waits := map[*match.Layer]int{}
		for _, w := range res.Waits {
			waits[w.Layer]++
			if w.Reason == "" {
				t.Fatalf("wait of %s without a reason", w.Layer.ID)
			}
		}
		for _, l := range farm.layers {
			left := placed[l] < len(l.Frames)
			if left && waits[l] != 1 || !left && waits[l] != 0 {
				t.Fatalf("layer %s: %d of %d frames placed, %d waits", l.ID, placed[l], len(l.Frames), waits[l])
			}
		}
	})
}

func cloneMap[V any](m map[string]V) map[string]V {
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// checkCap: a job or folder cap (the fakes treat an unknown id as unlimited)
// holds after every placement, both counters at once, as Cuebot's job guard
// checks them; a folder's negative max is unlimited, a job's refuses.
func checkCap(t *testing.T, i int, what string, c match.Cap, known bool, added match.Resources, folder bool) {
	t.Helper()
	if !known {
		return
	}
	over := func(used, add, max int64) bool {
		return max != match.NoMax && !(folder && max < 0) && used+add > max
	}
	if over(c.Cores, added.Cores, c.MaxCores) {
		t.Fatalf("#%d: %s past max cores (%+v, +%d)", i, what, c, added.Cores)
	}
	if over(c.GPUs, added.GPUs, c.MaxGPUs) {
		t.Fatalf("#%d: %s past max gpus (%+v, +%d)", i, what, c, added.GPUs)
	}
}
