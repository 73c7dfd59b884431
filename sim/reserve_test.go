package sim

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/sim/workload"
)

// A reservation made, backfilled and honoured in the loop. h1 (16 cores)
// runs layer p (12 frames of an hour) and q (4 of 20 minutes); wide (16
// cores) arrives at 1m and waits; job n's first frame runs on h2 (another
// allocation) for a minute, so its job's frames are expected to run a
// minute, and its layer n (4 one-core frames on h1's tag) waits behind it.
// wide reserves h1 at 2m, its start unknown (nothing of p's job has
// finished): n does not backfill. At 20m q ends: its job's mean says p's
// frames, past their 20 minutes, end in 10 more, so the reservation starts
// at 30m and n's frames (a minute) backfill the four cores q left. At 60m
// h1 empties and wide books it: honoured.
func TestReservationBackfilledAndHonoured(t *testing.T) {
	t.Parallel()
	const gb = workload.GB
	frames := func(n int, d time.Duration) []workload.Frame {
		out := make([]workload.Frame, n)
		for i := range out {
			out[i] = workload.Frame{Runtime: d, Used: gb}
		}
		return out
	}
	general, small := []string{"general"}, []string{"small"}
	render, quick := []string{"render"}, []string{"quick"}
	f := &workload.Farm{
		Allocs: []workload.Alloc{{ID: "general", Facility: "local"}, {ID: "small", Facility: "local"}},
		Hosts: []workload.Host{
			{ID: "h1", Facility: "local", Alloc: "general", Tags: []string{"general", "h1"}, Cores: 1600, Mem: 64 * gb},
			{ID: "h2", Facility: "local", Alloc: "small", Tags: []string{"small", "h2"}, Cores: 200, Mem: 8 * gb},
		},
		Subs: []workload.Sub{{Show: "s", Alloc: "general", Size: 1600, Burst: 3200}, {Show: "s", Alloc: "small", Size: 200, Burst: 400}},
		Jobs: []workload.Job{
			{ID: "j1", Show: "s", Priority: 1, Layers: []workload.Layer{
				{Name: "p", Cores: 100, Mem: 2 * gb, Tags: general, After: -1, Services: render, Frames: frames(12, time.Hour)},
				{Name: "q", Cores: 100, Mem: 2 * gb, Tags: general, After: -1, Services: render, Frames: frames(4, 20*time.Minute)},
			}},
			{ID: "w", Show: "s", Priority: 1, Arrive: time.Minute, Layers: []workload.Layer{
				{Name: "wide", Cores: 1600, Mem: 32 * gb, Tags: general, After: -1, Threadable: true, Frames: frames(1, 10*time.Minute)},
			}},
			{ID: "n", Show: "s", Priority: 1, Arrive: time.Minute, Layers: []workload.Layer{
				{Name: "n0", Cores: 100, Mem: gb, Tags: small, After: -1, Services: quick, Frames: frames(1, time.Minute)},
				{Name: "n", Cores: 100, Mem: gb, Tags: general, After: 0, Services: quick, Frames: frames(4, time.Minute)},
			}},
		},
		Frames: 22,
	}
	starts := map[string]time.Duration{}
	rep, err := RunFarm("backfill", f, Options{OnStop: func(r FrameRun) {
		if _, ok := starts[r.Layer]; !ok {
			starts[r.Layer] = r.Start
		}
	}}, []Variant{{Label: "reserve", Reservations: true, ReservationAfter: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Variants[0]
	if res.DrainS == nil || res.ReservationsMade < 2 || res.ReservationsHonoured != 1 || res.Backfills != 4 {
		t.Errorf("drain %v, %d reservations made, %d honoured, %d backfills: want drained, at least 2, 1, 4",
			res.DrainS, res.ReservationsMade, res.ReservationsHonoured, res.Backfills)
	}
	if starts["n"] != 20*time.Minute || starts["wide"] != time.Hour {
		t.Errorf("n started at %v, wide at %v: want 20m (backfilled when q ended) and 1h (h1 empty)", starts["n"], starts["wide"])
	}
}
