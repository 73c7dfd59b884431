package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// raceReps is how often each race runs: 6 in the default suite (each collides
// dozens of times; more repeats the same race at the suite's cost), 100 under
// `make chaos` (CUESCHED_CHAOS set).
func raceReps() int {
	if os.Getenv("CUESCHED_CHAOS") != "" {
		return 100
	}
	return 6
}

// Two dispatchers racing on the same frames and hosts, in one cluster (its
// lock turns one away at a time) and in two clusters sharing the hosts (only
// the row locks stand between them), book every frame exactly once and
// never over-commit a host; no transaction ever loses to a guard or a
// deadlock.
func TestRaceTwoDispatchers(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name string
		a, b int32
	}{{"same cluster", 1, 1}, {"clusters sharing hosts", 1, 2}} {
		t.Run(mode.name, func(t *testing.T) {
			reps := raceReps()
			// On a loaded machine the two goroutines may run one after the
			// other for a few repetitions: up to 24 are run until they have
			// collided.
			most := max(reps, 24)
			db := booktest.LoadFarm(t, raceFarm(most))
			m := NewMetrics(nil)
			lost := func() float64 {
				return counterValue(t, m.drops.WithLabelValues(string(DropFrameChanged))) +
					counterValue(t, m.drops.WithLabelValues(string(DropHostCapacity)))
			}
			ran := 0
			for rep := 0; rep < reps || rep < most && lost() == 0; rep++ {
				raceOnce(t, db, m, rep, Cluster{ID: mode.a}, Cluster{ID: mode.b})
				if t.Failed() {
					t.Fatalf("repetition %d failed", rep)
				}
				ran++
			}
			// The dispatchers did collide: each lost frames and hosts to
			// the other.
			t.Logf("%d repetitions, %v placements lost to the other dispatcher", ran, lost())
			if lost() == 0 {
				t.Error("the dispatchers never collided")
			}
		})
	}
}

// raceFarm holds one small farm per repetition, each its own allocation
// (tag race<rep>): 8 hosts of 8 cores and 32 frames of 1 or 2 cores (48
// cores in all), so every frame fits, but not wherever both dispatchers want
// it. One database serves every repetition: a fresh one each time would cost
// more than the race.
func raceFarm(reps int) *seed.Farm {
	f := &seed.Farm{Shows: []seed.Show{{Name: "film", Managed: true}}}
	for r := range reps {
		tag := fmt.Sprintf("race%d", r)
		alloc := "local." + tag
		f.Allocations = append(f.Allocations, seed.Allocation{Name: alloc, Tag: tag})
		f.Shows[0].Subscriptions = append(f.Shows[0].Subscriptions, seed.Subscription{Alloc: alloc, Size: 10000, Burst: 1_000_000})
		for i := range 8 {
			f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(r*8 + i), Alloc: alloc, Cores: 800, Mem: 64 * seed.GB})
		}
		for j := range 2 {
			job := seed.Job{Name: fmt.Sprintf("%s-job%d", tag, j), Show: "film", Priority: int64(j + 1)}
			for l, cores := range []int64{100, 200} {
				job.Layers = append(job.Layers, seed.Layer{Name: fmt.Sprintf("l%d", l), Frames: 8, Cores: cores,
					Mem: seed.GB, Threadable: true, Tags: tag})
			}
			f.Jobs = append(f.Jobs, job)
		}
	}
	return f
}

func raceOnce(t *testing.T, db *booktest.Seeded, m *Metrics, rep int, ca, cb Cluster) {
	ctx := ctxFor(t, 2*time.Minute)
	tag := fmt.Sprintf("race%d", rep)
	batchMax := 2 + rep%15
	start := make(chan struct{})
	type outcome struct {
		booked []Booking
		err    error
	}
	results := make(chan outcome, 2)
	for i, c := range []Cluster{ca, cb} {
		b := newTestBooker(db.Pool, BookerConfig{BatchMax: batchMax, Metrics: m})
		rng := rand.New(rand.NewPCG(uint64(rep), uint64(i)))
		go func() {
			<-start
			booked, err := dispatchAll(ctx, b.Booker, c, rng, tag)
			results <- outcome{booked, err}
		}()
	}
	close(start)
	byFrame := map[string]Booking{}
	for range 2 {
		o := <-results
		if o.err != nil {
			t.Errorf("dispatcher: %v", o.err)
		}
		for _, bk := range o.booked {
			if prev, dup := byFrame[bk.Frame.ID]; dup {
				t.Errorf("frame %s booked twice: procs %s and %s", bk.Frame.Name, prev.ProcID, bk.ProcID)
			}
			byFrame[bk.Frame.ID] = bk
		}
	}
	if len(byFrame) != 32 {
		t.Errorf("%d of 32 frames booked", len(byFrame))
	}
	var procs, rows int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), count(o.proc_id)
			FROM proc p JOIN host h ON h.pk_host = p.pk_host JOIN alloc a ON a.pk_alloc = h.pk_alloc
			LEFT JOIN cuesched.launch_outbox o ON o.proc_id = p.pk_proc WHERE a.str_tag = $1`, tag).
		Scan(&procs, &rows); err != nil {
		t.Fatal(err)
	}
	if procs != 32 || rows != 32 {
		t.Errorf("%d procs, %d outbox rows", procs, rows)
	}
	for _, reason := range []string{"guard", "deadlock", "serialization", "lock-timeout", "mismatch"} {
		if n := counterValue(t, m.guardLosses.WithLabelValues(reason)); n != 0 {
			t.Errorf("%v transactions lost to %s", n, reason)
		}
	}
	audittest.Clean(t, db.Pool)
}

// dispatchAll books every waiting frame of layers tagged tag, re-planning
// from the database after every batch (as the cache would, fed by the
// stream), until none waits.
func dispatchAll(ctx context.Context, b *Booker, c Cluster, rng *rand.Rand, tag string) ([]Booking, error) {
	var booked []Booking
	for round := 0; ; {
		if round == 1000 {
			return booked, fmt.Errorf("cluster %d: frames still waiting after %d rounds", c.ID, round)
		}
		v, err := booktest.LoadView(ctx, b.pool)
		if err != nil {
			return booked, err
		}
		v = v.Tagged(tag)
		waiting := 0
		for _, l := range v.Layers {
			waiting += len(l.Frames)
		}
		if waiting == 0 {
			return booked, nil
		}
		order := rng.Perm(len(v.Hosts))
		ps := booktest.FirstFit(v, order)
		rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		res, err := b.Book(ctx, c, ps)
		if err != nil {
			return booked, err
		}
		if !res.Busy {
			round++ // a busy cluster is retried at once and not counted
		}
		for _, d := range res.Dropped {
			switch d.Reason {
			case DropFrameChanged, DropHostCapacity:
			default:
				return booked, fmt.Errorf("cluster %d: unexpected drop %s: %s", c.ID, d.Reason, d.Detail)
			}
		}
		booked = append(booked, res.Booked...)
	}
}
