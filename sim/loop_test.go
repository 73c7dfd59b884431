package sim

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/scenario"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/scheduler/schedulertest"
	"github.com/cuesched/cuesched/sim/workload"
)

// The simulator's rounds are the loop's: a golden scenario booked by the
// simulator (its queue, caps, booker and the cache's host index, before any
// frame ends) places what the loop of `cuesched run` places with the
// harness's parts, frame for frame on each host, with the same waits. The
// scenarios are those of the loop's (scheduler/scenario_test.go) that
// ask nothing the simulator's farms cannot hold (limits, folders, idle
// below total, a round's bound, start-after times, thread modes).
func TestSimulatorRoundsAreTheLoops(t *testing.T) {
	files := []string{"../scheduler/testdata/burst.test", "../scheduler/testdata/gpu.test"}
	for _, n := range []string{"bestfit_wide", "burst", "burst_missing", "gpu", "gpu_spill", "pack_bestfit", "spread_epvm"} {
		files = append(files, filepath.Join("..", "match", "testdata", n+".test"))
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(f)))+"/"+strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			t.Parallel()
			sc, err := scenario.ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			loop, err := schedulertest.Outcome(t, sc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := simulated(sc)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != loop.String() {
				t.Errorf("the simulator:\n%s\nthe loop:\n%s", got, loop)
			}
		})
	}
}

// simulated books a scenario in the simulator until its first frame ends
// (each runs an hour) and returns what it placed and why layers wait.
func simulated(sc *scenario.Scenario) (*scenario.Outcome, error) {
	farm := &workload.Farm{}
	for _, h := range sc.Hosts {
		if h.IdleCores != h.Cores || h.IdleMem != h.Mem || h.MemFree != h.Mem || h.Mode != match.ThreadAuto {
			return nil, fmt.Errorf("%s:%d: the simulator's hosts start idle", sc.File, h.Line)
		}
		if !slices.ContainsFunc(farm.Allocs, func(a workload.Alloc) bool { return a.ID == h.Alloc }) {
			farm.Allocs = append(farm.Allocs, workload.Alloc{ID: h.Alloc, Facility: h.Facility})
		}
		tags := append([]string{h.Alloc, h.Name}, h.Tags...)
		slices.Sort(tags)
		farm.Hosts = append(farm.Hosts, workload.Host{ID: h.Name, Facility: h.Facility, Alloc: h.Alloc,
			Tags: slices.Compact(tags), Cores: h.Cores, Mem: h.Mem, GPUs: h.GPUs, GPUMem: h.GPUMem})
	}
	for _, s := range sc.Subs {
		farm.Subs = append(farm.Subs, workload.Sub{Show: s.Show, Alloc: s.Alloc, Size: s.Size, Burst: s.Burst})
	}
	var names []string // layer names by the simulator's layer index
	for _, j := range sc.Jobs {
		if j.MaxCores != match.NoMax || j.MaxGPUs != match.NoMax || j.OS != "" {
			return nil, fmt.Errorf("%s:%d: job caps and OS are not for the simulator", sc.File, j.Line)
		}
		job := workload.Job{ID: j.Name, Show: j.Show, Priority: j.Priority}
		for _, l := range sc.Layers {
			if l.Job != j.Name {
				continue
			}
			if len(l.Limits) > 0 || l.After != 0 || l.CoresMax != 0 || len(l.Services) > 0 {
				return nil, fmt.Errorf("%s:%d: not for the simulator", sc.File, l.Line)
			}
			frames := make([]workload.Frame, l.Frames)
			for i := range frames {
				frames[i] = workload.Frame{Runtime: time.Hour, Used: l.Mem / 2}
			}
			job.Layers = append(job.Layers, workload.Layer{Name: l.Name, Cores: l.Cores, Mem: l.Mem, GPUs: l.GPUs,
				GPUMem: l.GPUMem, Tags: match.ParseTags(l.Tags), After: -1, Threadable: l.Threadable, Frames: frames})
			names = append(names, l.Name)
			farm.Frames += l.Frames
		}
		farm.Jobs = append(farm.Jobs, job)
	}
	v := Variant{Order: match.OrderLottery}
	if sc.Options.Policy == "epvm" {
		v.Policy = match.NewEPVM(0, 0)
	}
	if sc.Options.Order == "strict" {
		v.Order = match.OrderStrict
	}
	if sc.Options.Max != 0 || len(sc.Options.Selfish) > 0 || len(sc.Folders) > 0 || len(sc.Running) > 0 {
		return nil, fmt.Errorf("%s:%d: options the simulator does not take", sc.File, sc.Options.Line)
	}
	r := newRun(farm, v)
	r.simulate(time.Nanosecond) // the rounds at time 0, before anything ends
	out := scenario.NewOutcome()
	for _, f := range r.frames {
		if f.state == frameRunning {
			out.Place(r.hosts[f.host].h.ID, names[f.layer])
		}
	}
	for _, c := range r.stepped {
		for _, w := range r.sched.Waits(c.Key()) {
			out.Waits[names[layerIndex(w.Layer.ID)]] = scenario.Wait{Reason: string(w.Reason), Detail: w.Detail}
		}
	}
	out.Subs = map[scenario.SubKey]int64{}
	for _, s := range sc.Subs {
		sub, _ := r.caps.Subscription(s.Show, s.Alloc)
		out.Subs[scenario.SubKey{Show: s.Show, Alloc: s.Alloc}] = sub.Cores
	}
	return out, nil
}
