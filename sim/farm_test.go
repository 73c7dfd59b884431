package sim

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/sim/workload"
)

// RunFarm runs a farm given whole, as a replay builds it: allocations of
// two facilities sharing a tag keep apart, a job runs in its own facility,
// and every frame runs once for its given time, its services carried to
// matching (a selfish service keeps the host to itself).
func TestRunFarm(t *testing.T) {
	t.Parallel()
	f := &workload.Farm{
		Allocs: []workload.Alloc{{ID: "local.general", Facility: "local", Tag: "general"},
			{ID: "cloud.general", Facility: "cloud", Tag: "general"}},
		Hosts: []workload.Host{
			{ID: "l1", Facility: "local", Alloc: "local.general", Tags: []string{"general", "l1"}, Cores: 800, Mem: 32 * workload.GB},
			{ID: "c1", Facility: "cloud", Alloc: "cloud.general", Tags: []string{"c1", "general"}, Cores: 800, Mem: 32 * workload.GB},
		},
		Subs: []workload.Sub{{Show: "s", Alloc: "local.general", Size: 800, Burst: 800},
			{Show: "s", Alloc: "cloud.general", Size: 800, Burst: 800}},
		Frames: 4,
	}
	layer := func(name string, services []string, runtimes ...time.Duration) workload.Layer {
		l := workload.Layer{Name: name, Cores: 100, Mem: workload.GB, Tags: []string{"general"}, After: -1, Services: services}
		for _, rt := range runtimes {
			l.Frames = append(l.Frames, workload.Frame{Runtime: rt, Used: workload.GB / 2})
		}
		return l
	}
	f.Jobs = []workload.Job{
		{ID: "in-cloud", Show: "s", Facility: "cloud", Priority: 1, Layers: []workload.Layer{layer("a", nil, 70*time.Second, 30*time.Second)}},
		{ID: "selfish", Show: "s", Facility: "local", Arrive: time.Minute, Priority: 1,
			Layers: []workload.Layer{layer("b", []string{"heavy"}, 50*time.Second)}},
		{ID: "after", Show: "s", Facility: "local", Arrive: time.Minute + 10*time.Second, Priority: 1,
			Layers: []workload.Layer{layer("c", nil, 5*time.Second)}},
	}
	f.Jobs[1].Layers[0].Threadable = true
	var runs []FrameRun
	rep, err := RunFarm("given", f, Options{OnStop: func(r FrameRun) { runs = append(runs, r) }},
		[]Variant{{Label: "selfish", SelfishServices: []string{"heavy"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []FrameRun{
		{Job: "in-cloud", Layer: "a", Frame: 1, Host: "c1", Start: 0, Stop: 30 * time.Second},
		{Job: "in-cloud", Layer: "a", Frame: 0, Host: "c1", Start: 0, Stop: 70 * time.Second},
		{Job: "selfish", Layer: "b", Frame: 0, Host: "l1", Start: time.Minute, Stop: time.Minute + 50*time.Second},
		// The selfish frame took every core of the one local host.
		{Job: "after", Layer: "c", Frame: 0, Host: "l1", Start: time.Minute + 50*time.Second, Stop: time.Minute + 55*time.Second},
	}
	if len(runs) != len(want) {
		t.Fatalf("runs %+v, want %+v", runs, want)
	}
	for i := range want {
		if runs[i] != want[i] {
			t.Errorf("run %d: %+v, want %+v", i, runs[i], want[i])
		}
	}
	if rep.Scenario != "given" || rep.Hosts != 2 || rep.Frames != 4 || rep.Variants[0].FramesBooked != 4 {
		t.Errorf("report %+v: want scenario given, 2 hosts, 4 frames booked once", rep)
	}
	if _, err := RunFarm("hostless", &workload.Farm{}, Options{}, defaultVariant); err == nil {
		t.Error("a farm without hosts ran")
	}
}
