package sim

import (
	"bytes"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim/workload"
)

// Issue 15's acceptance for memory from history, on a memory-bound farm at
// a tenth of its size (hosts and jobs alike, so memory still bounds it): at
// least 20% more frames running on average than best fit with the lottery
// booking requests, same workload and seed, and no more frames killed for
// their memory. BENCHMARKS.md has the full size.
func TestMemoryFromHistory(t *testing.T) {
	t.Parallel()
	w, err := workload.Load("memory-bound")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(w, Options{Seed: 1, Scale: 0.1, JobScale: 0.1}, []Variant{
		{Label: "today", TagPressure: 0.5},
		{Label: "history", TagPressure: 0.5, Memory: match.Memory{Shows: []string{"*"}, Headroom: 0.2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("\n%s", buf.String())
	today, hist := rep.Variants[0], rep.Variants[1]
	if today.DrainS == nil || hist.DrainS == nil {
		t.Fatal("a variant did not drain")
	}
	if today.MemoryTrimmed != 0 || today.MemoryRestored != 0 {
		t.Errorf("today trimmed %d frames and restored %d layers, want none", today.MemoryTrimmed, today.MemoryRestored)
	}
	if hist.MemoryTrimmed == 0 {
		t.Error("memory from history trimmed no frame")
	}
	if hist.FramesRunningAvg < 1.2*today.FramesRunningAvg {
		t.Errorf("frames running on average %.1f with memory from history, want at least 1.2 x %.1f",
			hist.FramesRunningAvg, today.FramesRunningAvg)
	}
	if hist.OOMKills > today.OOMKills {
		t.Errorf("%d frames killed for memory with memory from history, today %d", hist.OOMKills, today.OOMKills)
	}
}

// A memory failure restores the request: one 64 GB host and a layer asking
// 30 GB whose first four frames (two at a time) use 10 GB. Then its
// frames are booked with 12 GB, five at once; the first of them uses 40 GB,
// so the fourth and fifth find less left on the host than they use and are
// killed for their memory. The layer stops being trimmed: the two retries,
// like every later frame, are booked with the full 30 GB.
func TestMemoryFailureRestores(t *testing.T) {
	t.Parallel()
	const gb = workload.GB
	l := workload.Layer{Name: "r", Cores: 100, Mem: 30 * gb, Tags: []string{"general"}, After: -1}
	for i := range 11 {
		used := int64(10 * gb)
		if i == 4 {
			used = 40 * gb
		}
		l.Frames = append(l.Frames, workload.Frame{Runtime: 10 * time.Minute, Used: used})
	}
	f := &workload.Farm{
		Allocs: []workload.Alloc{{ID: "general", Facility: "local"}},
		Hosts:  []workload.Host{{ID: "h1", Facility: "local", Alloc: "general", Tags: []string{"general", "h1"}, Cores: 1600, Mem: 64 * gb}},
		Subs:   []workload.Sub{{Show: "s", Alloc: "general", Size: 1600, Burst: 1600}},
		Jobs:   []workload.Job{{ID: "j", Show: "s", Priority: 1, Layers: []workload.Layer{l}}},
		Frames: len(l.Frames),
	}
	var killed []int
	rep, err := RunFarm("restore", f, Options{OnStop: func(r FrameRun) {
		if r.Killed {
			killed = append(killed, r.Frame)
		}
	}}, []Variant{{Label: "history", Memory: match.Memory{Shows: []string{"s"}, Headroom: 0.2}}})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Variants[0]
	if res.DrainS == nil || res.MemoryTrimmed != 5 || res.MemoryRestored != 1 || res.OOMKills != 2 ||
		len(killed) != 2 || killed[0] != 7 || killed[1] != 8 {
		t.Errorf("drain %v, %d frames trimmed, %d layers restored, %d killed (frames %v): want drained, 5, 1, 2 (frames 7 and 8)",
			res.DrainS, res.MemoryTrimmed, res.MemoryRestored, res.OOMKills, killed)
	}
}
