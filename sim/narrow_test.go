package sim

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/sim/workload"
)

// smallNarrowFlood is narrow-flood.sim at a quarter of its hosts and
// frames, the same arrivals over time: cheap enough for the default suite.
const smallNarrowFlood = `about narrow-flood.sim at a quarter of its hosts and frames
hosts 50 cores=16 mem=64G alloc=general
sub studio general size=800 burst=1600
job flood show=studio count=40 every=3m priority=50
layer narrow job=flood frames=25 cores=1 mem=2G used=0.5-0.9 runtime=30m-60m
job wide show=studio count=5 start=10m priority=50
layer wide job=wide frames=10 cores=16 mem=32G used=0.5-0.9 runtime=30m-60m threadable
`

// Reservations (issue 15) on the narrow flood, against best fit with the
// lottery, the same workload and seed in the same run: reservations are
// made and honoured, and utilization is at most 2 points lower. The wide
// layers' waits are logged, not asserted: a quarter of the farm leaves too
// few wide frames waiting for a p99 to mean much, and on the full farm no
// scheduler can bring it 5x lower (BENCHMARKS.md, "Reservations with
// backfill"). TestReservationBackfilledAndHonoured shows a backfill.
func TestNarrowFloodReservations(t *testing.T) {
	t.Parallel()
	w, err := workload.Parse("small-narrow-flood", []byte(smallNarrowFlood))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(w, Options{Seed: 1}, []Variant{
		{Label: "today", TagPressure: 0.5},
		{Label: "reserve", TagPressure: 0.5, Reservations: true, ReservationAfter: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("\n%s", buf.String())
	today, resv := rep.Variants[0], rep.Variants[1]
	if today.ReservationsMade != 0 || today.ReservationsHonoured != 0 || today.Backfills != 0 {
		t.Errorf("today made %d reservations, honoured %d, backfilled %d: want none", today.ReservationsMade,
			today.ReservationsHonoured, today.Backfills)
	}
	if resv.ReservationsMade == 0 || resv.ReservationsHonoured == 0 {
		t.Errorf("with reservations: %d made, %d honoured: want some of each", resv.ReservationsMade, resv.ReservationsHonoured)
	}
	if resv.Utilization < today.Utilization-0.02 {
		t.Errorf("utilization %.3f with reservations, %.3f without: want at most 2 points lower", resv.Utilization,
			today.Utilization)
	}
	if today.DrainS == nil || resv.DrainS == nil {
		t.Error("a variant did not drain")
	}
}

// The narrow flood's floor, measured in the run (issue 15 asks the wide
// layers' p99 wait 5x lower with reservations): the frames a scheduler
// started before the wide layers arrive at 10 minutes hold their hosts
// until they end, and a wide frame needs a host of its own. No
// non-preemptive scheduler starts the wide frames sooner than this: place
// no narrow frame after 10 minutes, and start the wide frames shortest
// first, each on the host that frees first (floorStarts). Both variants'
// p99 must be at or above the floor; today's over the floor is the most
// any scheduler could bring the p99 down on this shape, and it is far from
// 5x. Full size: narrow-flood simulates in about a tenth of a second.
func TestNarrowFloodFloor(t *testing.T) {
	t.Parallel()
	w, err := workload.Load("narrow-flood")
	if err != nil {
		t.Fatal(err)
	}
	const arrive = 10 * time.Minute // the wide layers' arrival (start=10m)
	hosts := 0
	for _, g := range w.Hosts {
		hosts += g.N
	}
	for _, v := range []Variant{
		{Label: "today", TagPressure: 0.5},
		{Label: "reserve", TagPressure: 0.5, Reservations: true, ReservationAfter: time.Minute},
	} {
		freeAt := map[string]time.Duration{} // hosts busy at the arrival: when their frames end
		var wide []time.Duration
		rep, err := Run(w, Options{Seed: 1, OnStop: func(r FrameRun) {
			switch {
			case r.Layer == "wide":
				wide = append(wide, r.Stop-r.Start)
			case r.Start < arrive && r.Stop > arrive:
				freeAt[r.Host] = max(freeAt[r.Host], r.Stop)
			}
		}}, []Variant{v})
		if err != nil {
			t.Fatal(err)
		}
		got := rep.Variants[0].Wait["5to16"]
		floor := floorP99(hosts, freeAt, wide, arrive)
		t.Logf("%s: wide frames' p99 wait %.0f s, the floor %.0f s (%d frames, %d hosts busy at %v): at most %.2fx lower",
			v.Label, got.P99S, floor, len(wide), len(freeAt), arrive, got.P99S/floor)
		if len(wide) != 200 || got.Frames != 200 {
			t.Fatalf("%s: %d wide frames ran, %d counted: want narrow-flood's 200", v.Label, len(wide), got.Frames)
		}
		if got.P99S < floor {
			t.Errorf("%s: p99 %.0f s below the floor %.0f s: the floor is wrong", v.Label, got.P99S, floor)
		}
		if v.Label == "today" && got.P99S/floor >= 5 {
			t.Errorf("today's p99 %.0f s is %.1fx the floor: 5x lower would be reachable", got.P99S, got.P99S/floor)
		}
	}
}

// floorP99 is the p99 wait of the wide frames (their run times) started at
// the earliest any scheduler could: hosts free at arrive but those in
// freeAt, free when it says; the frames shortest first, each on the host
// free soonest, which starts as many as can be started by any time.
func floorP99(hosts int, freeAt map[string]time.Duration, runs []time.Duration, arrive time.Duration) float64 {
	free := make([]time.Duration, 0, hosts)
	for _, at := range freeAt {
		free = append(free, at)
	}
	for len(free) < hosts {
		free = append(free, arrive)
	}
	runs = slices.Clone(runs)
	slices.Sort(runs)
	waits := make([]float64, 0, len(runs))
	for _, d := range runs {
		i := slices.Index(free, slices.Min(free))
		start := max(free[i], arrive)
		waits = append(waits, (start - arrive).Seconds())
		free[i] = start + d
	}
	slices.Sort(waits)
	return quantile(waits, 0.99)
}
