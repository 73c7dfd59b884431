package e2e

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/sim"
	"github.com/cuesched/cuesched/sim/workload"
)

// The simulator is faithful to a real `cuesched run` (issue 14): a small
// farm (faithfulSize's, drawn with a seed) runs through sim.Run in
// simulated time and through a live instance on PostgreSQL, each job
// resumed at its arrival time and each frame run by its host's fake RQD for
// its drawn duration, both scaled down (faithfulSize); at a quarter, half
// and three quarters of the time the simulator's last frame starts (after
// which nothing waits, and every count is the layer's frames in both), the
// frames each layer has started agree within faithfulTolerance, the real
// run's read as late as its layer's first start lagged the simulator's (its
// reaction time, at most faithfulMaxLag).
//
// Both run with --order strict: the lottery draws from a seed that counts
// rounds, and the real loop's rounds follow the timing of its wakes, so
// the two would draw different layers at the same point; strict order
// leaves the placements to the rules alone.
func TestSimulatorFaithful(t *testing.T) {
	t.Parallel()
	v := faithfulSize()
	scale := v.scale
	wl, err := workload.ParseFile(v.file)
	if err != nil {
		t.Fatal(err)
	}
	const drawSeed = 1
	farm, err := wl.Draw(drawSeed, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	// The simulation: each frame's first start, from its runs (sim's trace
	// of every run as it stops).
	simStarts := map[faithfulFrame]time.Duration{}
	rep, err := sim.Run(wl, sim.Options{Seed: drawSeed, OnStop: func(r sim.FrameRun) {
		f := faithfulFrame{r.Job, r.Layer, r.Frame}
		if was, ok := simStarts[f]; !ok || r.Start < was {
			simStarts[f] = r.Start
		}
	}}, []sim.Variant{{Label: "strict", Order: match.OrderStrict, TagPressure: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	var lastStart time.Duration
	for _, at := range simStarts {
		lastStart = max(lastStart, at)
	}
	if res := rep.Variants[0]; res.DrainS == nil || res.OOMKills > 0 {
		t.Fatalf("the simulation: drain %v, %d frames killed for memory: want a drained farm and none killed",
			res.DrainS, res.OOMKills)
	}
	quarters := []float64{0.25, 0.5, 0.75}
	checkpoints := make([]time.Duration, len(quarters))
	for i, q := range quarters {
		checkpoints[i] = time.Duration(q * float64(lastStart))
	}

	// The real run. Past the last checkpoint nothing is compared: the
	// frames running then and those that follow end at once (hurry), so
	// the run drains in moments and ends with the suite's checks.
	sf, err := seedFarmOf(farm)
	if err != nil {
		t.Fatal(err)
	}
	runTimes := map[string]time.Duration{} // by job name and frame name, scaled
	for _, j := range farm.Jobs {
		for _, l := range j.Layers {
			for i, f := range l.Frames {
				runTimes[runTimeKey(j.ID, seedFrameName(l.Name, i))] = time.Duration(float64(f.Runtime) / scale)
			}
		}
	}
	for _, h := range sf.Hosts {
		runTimes[runTimeKey(warmUpJob, seedFrameName(warmUpLayer(h.Name), 0))] = time.Millisecond
	}
	cores := map[string]int64{}
	for _, h := range sf.Hosts {
		cores[h.Name] = h.Cores
	}
	var missing []string
	var hurried atomic.Bool
	db := ownDB(t)
	w := newWorldOf(t, db, sf, v.keySeed, func(w *faultWorld, host string) fakerqd.Options {
		return fakerqd.Options{Cores: cores[host],
			RunTime: func(rf *rqd.RunFrame) time.Duration {
				d, ok := runTimes[runTimeKey(rf.GetJobName(), rf.GetFrameName())]
				if !ok {
					w.mu.Lock()
					missing = append(missing, rf.GetJobName()+"/"+rf.GetFrameName())
					w.mu.Unlock()
				}
				if !ok || hurried.Load() {
					return time.Millisecond
				}
				return d
			},
			OnComplete: func(_ string, rf *rqd.RunFrame) { w.complete(rf) }}
	})
	inst := w.start(t, "--order", "strict")
	waitFor(t, time.Minute, inst.name+" owning every cluster", func() bool {
		ok, _ := ownedOnce(t, db.Pool, inst)
		return ok
	}, inst)
	warm := warmUp(t, w, sf, inst)
	// Every job is launched paused before the clock starts, in order of
	// arrival (Cuebot's order among equal priorities is by job start), and
	// resumed as it arrives: a launch's own transaction (hundreds of rows)
	// is the test's work, not the loop's, and must not delay a job's
	// frames.
	frameOf := map[string]faithfulFrame{} // by pk_frame
	jobIDs := make([]string, len(farm.Jobs))
	outOfOrder := false // the first job's layers keyed out of their dispatch order
	for i, j := range farm.Jobs {
		sj := seedJobOf(j)
		sj.Paused = true
		keys, err := w.seeded.Launch(t.Context(), sj)
		if err != nil {
			t.Fatal(err)
		}
		jobIDs[i] = keys.ID
		if i == 0 {
			outOfOrder = keyOrderDiffers(j, keys)
		}
		for _, l := range j.Layers {
			for i := range l.Frames {
				frameOf[keys.Frames[seedFrameName(l.Name, i)]] = faithfulFrame{j.ID, l.Name, i}
			}
		}
	}
	// A loop that took equal priorities in key order (Cuebot's random
	// UUIDs) rather than Cuebot's order would book these jobs' layers in
	// another order than the simulator: the keys' seed is one that gives
	// layers of the first job, sharing hosts, keys out of their dispatch
	// order, so that such a loop fails the test.
	if !outOfOrder {
		t.Fatalf("the first job's layers have keys in their dispatch order: pick another key seed than %d", v.keySeed)
	}
	t0 := time.Now()
	realAt := func(d time.Duration) time.Time { return t0.Add(time.Duration(float64(d) / scale)) }
	until := func(at time.Time, what string) {
		select {
		case <-time.After(time.Until(at)):
		case <-inst.done:
			t.Fatalf("%s exited (%v) before %s", inst.name, inst.err, what)
		}
	}
	hurry := func() {
		until(realAt(checkpoints[len(checkpoints)-1]), "the last checkpoint")
		hurried.Store(true)
		for _, s := range w.servers() {
			for _, id := range s.Running() {
				s.Complete(id)
			}
		}
	}
	for i, j := range farm.Jobs {
		if j.Arrive > checkpoints[len(checkpoints)-1] && !hurried.Load() {
			hurry()
		}
		at := realAt(j.Arrive)
		until(at, "job "+j.ID+" arrived")
		exec1(t, db.Pool, `UPDATE job SET b_paused = false WHERE pk_job = $1`, jobIDs[i])
		if late := time.Since(at); late > 50*time.Millisecond {
			t.Logf("job %s resumed %v late (%v simulated)", j.ID, late.Round(time.Millisecond),
				time.Duration(float64(late)*scale).Round(time.Second))
		}
	}
	if !hurried.Load() {
		hurry()
	}
	w.finish(t, inst)
	w.mu.Lock()
	if len(missing) > 0 {
		t.Errorf("frames launched with no drawn duration: %v", missing)
	}
	w.mu.Unlock()
	realStarts := map[faithfulFrame]time.Duration{}
	for _, r := range w.runs() {
		f, ok := frameOf[r.frame]
		if !ok && slices.Contains(warm, r.frame) {
			continue
		}
		if !ok {
			t.Fatalf("%s ran frame %s, which no job of the farm holds", r.host, r.frame)
		}
		at := time.Duration(float64(r.start.Sub(t0)) * scale)
		if was, ok := realStarts[f]; !ok || at < was {
			realStarts[f] = at
		}
	}

	// The comparison, layer by layer at each checkpoint.
	var report strings.Builder
	fmt.Fprintf(&report, "%s at scale %g: the simulator's last frame starts at %v (%v real); "+
		"frames started by layer at each checkpoint, simulator/real (read as late as the layer's first start lagged):\n", v.file, scale, lastStart.Round(time.Second),
		time.Duration(float64(lastStart)/scale).Round(time.Millisecond))
	worst := 0.0
	for _, j := range farm.Jobs {
		for _, l := range j.Layers {
			fmt.Fprintf(&report, "  %-12s %-7s %3d frames:", j.ID, l.Name, len(l.Frames))
			tol := faithfulTolerance(len(l.Frames))
			// The real run reacts to each event (an arrival, a frame's end
			// freeing its host or its dependency) a few hundred milliseconds
			// late, more on a busy machine, and the simulator not at all;
			// at 20x that is seconds of simulated time, which a layer
			// starting a frame every few seconds would read as frames
			// missing. The real run's counts are read that much later: the
			// lag of the layer's first start, bounded (faithfulMaxLag).
			lag := max(0, layerFirst(realStarts, j.ID, l.Name, len(l.Frames))-layerFirst(simStarts, j.ID, l.Name, len(l.Frames)))
			if lag > faithfulMaxLag && lag < math.MaxInt64/2 {
				t.Errorf("%s/%s: the real run started its first frame %v (simulated) after the simulator, more than %v",
					j.ID, l.Name, lag.Round(time.Second), faithfulMaxLag)
			}
			lag = min(lag, faithfulMaxLag)
			differ := false // the layer's first starts are logged when its counts differ at all
			for _, c := range checkpoints {
				s := startedBy(simStarts, j.ID, l.Name, len(l.Frames), c)
				r := startedBy(realStarts, j.ID, l.Name, len(l.Frames), c+lag)
				fmt.Fprintf(&report, "  %6v %3d/%-3d", c.Round(time.Second), s, r)
				d := math.Abs(float64(s - r))
				differ = differ || d > 0
				worst = max(worst, d/float64(len(l.Frames)))
				if d > tol {
					t.Errorf("%s/%s at %v: the simulator started %d frames, the real run %d: more than %.1f apart",
						j.ID, l.Name, c.Round(time.Second), s, r, tol)
				}
			}
			report.WriteString("\n")
			if differ {
				fmt.Fprintf(&report, "    first starts, simulator: %v\n    first starts, real:      %v\n",
					firstStarts(simStarts, j.ID, l.Name, len(l.Frames)), firstStarts(realStarts, j.ID, l.Name, len(l.Frames)))
			}
		}
	}
	// How long after its arrival each job's first frame started: the real
	// run's reaction time, in simulated time.
	for _, j := range farm.Jobs {
		first := func(starts map[faithfulFrame]time.Duration) time.Duration {
			d := time.Duration(math.MaxInt64)
			for _, l := range j.Layers {
				for i := range l.Frames {
					if at, ok := starts[faithfulFrame{j.ID, l.Name, i}]; ok {
						d = min(d, at-j.Arrive)
					}
				}
			}
			return d
		}
		fmt.Fprintf(&report, "  %-12s arrives at %v, first start %v later in the simulator, %v in the real run\n",
			j.ID, j.Arrive.Round(time.Second), first(simStarts).Round(time.Second), first(realStarts).Round(100*time.Millisecond))
	}
	fmt.Fprintf(&report, "largest difference: %.1f%% of a layer's frames", worst*100)
	t.Log(report.String())
}

// warmUp runs a frame on every host of the farm before the scenario's
// clock starts, in a show of its own, and waits until the farm is idle
// again: the first launch to a host dials its RQD, and the first booking of
// an instance and the first launch of a job in a fresh database take
// hundreds of milliseconds more than those that follow (several simulated
// minutes at the test's scale), which the scenario's first job would
// otherwise pay alone.
func warmUp(t *testing.T, w *faultWorld, sf *seed.Farm, inst *instance) (frames []string) {
	t.Helper()
	j := seed.Job{Name: warmUpJob, Show: warmUpShow, Priority: 1, MaxCores: 1_000_000}
	for _, h := range sf.Hosts {
		j.Layers = append(j.Layers, seed.Layer{Name: warmUpLayer(h.Name), Frames: 1, Cores: seed.Core, Mem: seed.GB,
			Tags: h.Name})
	}
	keys, err := w.seeded.Launch(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range keys.Frames {
		frames = append(frames, id)
	}
	w.succeeded(t, frames, time.Minute, inst)
	waitFor(t, time.Minute, "the warm-up's procs released", func() bool {
		return count(t, w.db.Pool, `SELECT count(*) FROM proc`) == 0
	}, inst)
	return frames
}

const (
	warmUpJob  = "faithful-warmup"
	warmUpShow = "faithful-warmup"
)

func warmUpLayer(host string) string { return "on-" + strings.ReplaceAll(host, ".", "-") }

// faithfulSize is the farm the test runs and how many simulated seconds a
// real second stands for. The real run trails the simulation by its reaction time: a
// job's first launches come some tens of milliseconds after it arrives, and
// each completion's release, replication, round, booking and launch take as
// much again, several times more on a loaded machine; a checkpoint just after
// a burst of starts in the simulation counts the burst's frames on one side
// only while the real run trails it. The default suite runs a small full
// farm (testdata/faithful-small.sim), whose frames mostly start one by one
// as others end, at 20 (about 12 s of real run); make chaos runs the larger
// farm, whose jobs start dozens of frames at once, at 10 (about a minute).
func faithfulSize() faithfulVariant {
	if chaosOn() {
		return faithfulVariant{file: "testdata/faithful.sim", scale: 10, keySeed: 14}
	}
	return faithfulVariant{file: "testdata/faithful-small.sim", scale: 20, keySeed: 18}
}

// faithfulVariant is one size of the test. keySeed seeds the keys of the
// real run's rows (seed.Load): one that gives the first job's layers keys
// out of their dispatch order.
type faithfulVariant struct {
	file    string
	scale   float64
	keySeed uint64
}

// keyOrderDiffers reports whether two of the job's layers asking for a
// tag in common (so taking turns on the same hosts) have keys that sort
// otherwise than their dispatch order.
func keyOrderDiffers(j workload.Job, keys seed.JobKeys) bool {
	for i, a := range j.Layers {
		for _, b := range j.Layers[i+1:] {
			shared := slices.ContainsFunc(a.Tags, func(tag string) bool { return slices.Contains(b.Tags, tag) })
			if shared && keys.Layers[a.Name] > keys.Layers[b.Name] {
				return true
			}
		}
	}
	return false
}

// faithfulTolerance is how far apart the two runs' counts of a layer's
// started frames may be: 10% of the layer's frames (what the issue asks),
// and at least 2 frames, as a layer's frames start in groups (a job
// arriving, a host freed of a wide frame starts several narrow ones) and a
// group landing a few milliseconds either side of a checkpoint moves a
// small layer's count past its 10% by itself.
func faithfulTolerance(frames int) float64 { return max(0.1*float64(frames), 2) }

// faithfulMaxLag is the most a layer's first start may lag the simulator's
// in the real run (simulated time: 3 s of the real run at 20x), the
// reaction of a loaded machine running the suite in parallel; more is a
// difference the simulator must explain.
const faithfulMaxLag = time.Minute

// layerFirst is when the layer's first frame started (MaxInt64: never).
func layerFirst(starts map[faithfulFrame]time.Duration, job, layer string, frames int) time.Duration {
	first := time.Duration(math.MaxInt64)
	for i := range frames {
		if at, ok := starts[faithfulFrame{job, layer, i}]; ok {
			first = min(first, at)
		}
	}
	return first
}

// faithfulFrame names a frame of the farm in both runs: its job, its layer
// and its index in the layer.
type faithfulFrame struct {
	job, layer string
	n          int
}

// startedBy counts the layer's frames first started by c.
func startedBy(starts map[faithfulFrame]time.Duration, job, layer string, frames int, c time.Duration) int {
	n := 0
	for i := range frames {
		if at, ok := starts[faithfulFrame{job, layer, i}]; ok && at <= c {
			n++
		}
	}
	return n
}

func runTimeKey(job, frame string) string { return job + "\x00" + frame }

// seedFrameName is the seeded name of a layer's frame i (from 0): seed
// numbers a layer's frames from 1 (frame.str_name "0001-render").
func seedFrameName(layer string, i int) string { return fmt.Sprintf("%04d-%s", i+1, layer) }

// seedFarmOf is the drawn farm for the Cuebot-compatible schema, without its
// jobs (the test launches each at its arrival) and with a show for warmUp: an allocation local.NAME
// tagged NAME per allocation, the hosts on loopback addresses with their
// extra tags as manual tags, a managed show per subscribing show.
func seedFarmOf(f *workload.Farm) (*seed.Farm, error) {
	out := &seed.Farm{}
	for _, a := range f.Allocs {
		if a.Facility != "local" {
			return nil, fmt.Errorf("allocation %s: facility %s, want local", a.ID, a.Facility)
		}
		out.Allocations = append(out.Allocations, seed.Allocation{Name: "local." + a.ID, Tag: a.ID})
	}
	for i, h := range f.Hosts {
		manual := slices.DeleteFunc(slices.Clone(h.Tags), func(tag string) bool { return tag == h.Alloc || tag == h.ID })
		out.Hosts = append(out.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: "local." + h.Alloc, Cores: h.Cores,
			Mem: h.Mem, GPUs: h.GPUs, GPUMem: h.GPUMem, ManualTags: manual})
	}
	warm := seed.Show{Name: warmUpShow, Managed: true}
	for _, a := range out.Allocations {
		warm.Subscriptions = append(warm.Subscriptions, seed.Subscription{Alloc: a.Name, Size: 100_000, Burst: 100_000})
	}
	out.Shows = append(out.Shows, warm)
	for _, s := range f.Subs {
		i := slices.IndexFunc(out.Shows, func(sh seed.Show) bool { return sh.Name == s.Show })
		if i < 0 {
			out.Shows = append(out.Shows, seed.Show{Name: s.Show, Managed: true})
			i = len(out.Shows) - 1
		}
		out.Shows[i].Subscriptions = append(out.Shows[i].Subscriptions,
			seed.Subscription{Alloc: "local." + s.Alloc, Size: s.Size, Burst: s.Burst})
	}
	for _, j := range f.Jobs {
		for _, l := range j.Layers {
			if l.After >= 0 {
				return nil, fmt.Errorf("job %s, layer %s: waits for another layer, which the test does not launch", j.ID, l.Name)
			}
		}
	}
	return out, nil
}

// seedJobOf is a drawn job to launch: no job cap when it has none (seed's
// default is Cuebot's 100 cores).
func seedJobOf(j workload.Job) seed.Job {
	out := seed.Job{Name: j.ID, Show: j.Show, Priority: j.Priority, MaxCores: j.MaxCores}
	if out.MaxCores == 0 {
		out.MaxCores = 1_000_000
	}
	for _, l := range j.Layers {
		out.Layers = append(out.Layers, seed.Layer{Name: l.Name, Frames: len(l.Frames), Cores: l.Cores, Mem: l.Mem,
			GPUs: l.GPUs, GPUMem: l.GPUMem, Threadable: l.Threadable, Tags: strings.Join(l.Tags, "|")})
	}
	return out
}

// firstStarts lists the layer's frames' first starts, in order, to the
// second ("-" for a frame that never started).
func firstStarts(starts map[faithfulFrame]time.Duration, job, layer string, frames int) string {
	var ds []time.Duration
	never := 0
	for i := range frames {
		if at, ok := starts[faithfulFrame{job, layer, i}]; ok {
			ds = append(ds, at.Round(time.Second))
		} else {
			never++
		}
	}
	slices.Sort(ds)
	return fmt.Sprintf("%v%s", ds, strings.Repeat(" -", never))
}
