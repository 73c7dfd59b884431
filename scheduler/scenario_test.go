package scheduler_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/scenario"
	"github.com/cuesched/cuesched/scheduler/schedulertest"
)

// Scenarios in the loop's view: testdata/*.test, in the scenario language
// of internal/scenario (README.md), run through the loop with every
// placement committed (schedulertest.RunScenario).
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata")
	}
	runScenarios(t, files)
}

// matchScenarios are match's golden scenarios that hold for the loop too:
// one round of matching books what the loop's rounds book, since the caps
// count every commit between rounds. The others do not: converge.test has
// rounds and procs ending between them, deferred.test a placement bound
// the loop runs on past (testdata/deferred.test), lottery_flood.test and
// strict_flood.test a seed of their own; without it they still do not
// hold, since the loop reads 32 frames of a layer a round and the first
// round's 11 x 32 frames all fit, so lo places all its 50 frames under
// either order. pressure.test has a contested tag, and in pressure_off.test
// the allocation's and the tag's clusters race for the same hosts.
var matchScenarios = []string{"bestfit_wide", "burst", "burst_missing", "gpu", "gpu_spill", "limit",
	"locality", "pack_bestfit", "sizing", "spread_epvm", "waits", "memory_trimmed", "memory_failure"}

// Match's golden scenarios that hold for the loop as they are.
func TestMatchScenariosInTheLoop(t *testing.T) {
	var files []string
	for _, name := range matchScenarios {
		files = append(files, filepath.Join("..", "match", "testdata", name+".test"))
	}
	runScenarios(t, files)
}

func runScenarios(t *testing.T, files []string) {
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			t.Parallel()
			schedulertest.RunScenario(t, f)
		})
	}
}

// What the loop decides itself, a scenario may not: each is refused naming
// its line.
func TestScenarioRefusedByTheLoop(t *testing.T) {
	t.Parallel()
	const farm = "host h1\nhost g1 tags=gpu\nsub show general size=10 burst=10\njob j show=show\n"
	for _, tc := range []struct{ name, src, want string }{
		{"rounds", "options rounds=3 finish=1\n", "x.test:5: not for the loop: rounds="},
		{"seed", "options seed=7\n", "x.test:5: not for the loop: seed=7"},
		{"allocs", "host b1 alloc=other\noptions allocs=general\n", "x.test:6: not for the loop: allocs="},
		{"contested", "contested gpu\n", "x.test:5: not for the loop: contested gpu"},
		{"clusters", "layer l job=j tags=general|gpu\n", "x.test:5: not for the loop: layer l: its tags fall in 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sc, err := scenario.Parse("x.test", []byte(farm+tc.src))
			if err != nil {
				t.Fatal(err)
			}
			_, err = schedulertest.Outcome(t, sc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The simulator drives the loop's own rounds (Scheduler.Drive): every
// scenario the loop runs gives the same outcome driven one round at a time,
// as package sim drives it, as run by the goroutine per cluster of
// `cuesched run`: the same placements, subscription usage and wait reasons,
// and its expect lines hold.
func TestSteppedRoundsAreTheLoops(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range matchScenarios {
		files = append(files, filepath.Join("..", "match", "testdata", name+".test"))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			t.Parallel()
			sc, err := scenario.ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			loop, err := schedulertest.Outcome(t, sc)
			if err != nil {
				t.Fatal(err)
			}
			stepped, err := schedulertest.SteppedOutcome(t, sc)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range sc.Check(stepped) {
				t.Errorf("stepped: %v", err)
			}
			if got, want := stepped.String(), loop.String(); got != want {
				t.Errorf("stepped outcome:\n%s\nthe loop's:\n%s", got, want)
			}
		})
	}
}
