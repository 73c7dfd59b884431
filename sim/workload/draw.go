package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Farm is a workload drawn with a seed: concrete hosts, subscriptions and
// jobs, every frame's duration and actual memory use fixed.
type Farm struct {
	Allocs []Alloc
	Hosts  []Host
	Subs   []Sub
	Jobs   []Job // by arrival, then template order
	Frames int   // over all jobs
}

// Alloc is an allocation. Tag is the tag its hosts carry, "" for its ID
// (a replayed farm's allocations keep Cuebot's alloc.str_tag, which two
// facilities may share).
type Alloc struct{ ID, Facility, Tag string }

// Host is one render host; Tags hold its allocation's tag and its name.
type Host struct {
	ID, Facility, Alloc      string
	Tags                     []string
	Cores, Mem, GPUs, GPUMem int64
}

// Job is one job of a template. Facility is the facility its layers run
// in, "" for the first host's.
type Job struct {
	ID, Show string
	Facility string
	Arrive   time.Duration
	Priority int64
	MaxCores int64 // 0: no cap
	Layers   []Layer
}

// Layer is one layer of a job; After is the index of the layer it waits
// for in the job's Layers, -1 for none.
type Layer struct {
	Name                     string
	Cores, Mem, GPUs, GPUMem int64
	Tags                     []string
	After                    int
	Threadable               bool
	Services                 []string // as layer.str_services lists them (selfish-services reads them)
	// Setup is how much longer a frame runs when started on a host that is
	// not warm for the layer (match.WarmthOf).
	Setup  time.Duration
	Frames []Frame
}

// Frame is one frame: how long it runs and how much memory it uses (KB).
type Frame struct {
	Runtime time.Duration
	Used    int64
}

// Draw draws the farm of a workload with seed. scale shrinks the farm
// (each host group's count, each subscription's size and burst) and
// jobScale the work (each template's job count), at least one of each;
// frames per layer are kept. Each is a fraction above 0 and at most 1, or
// 0 for 1.
func (w *Workload) Draw(seed uint64, scale, jobScale float64) (*Farm, error) {
	if scale == 0 {
		scale = 1
	}
	if jobScale == 0 {
		jobScale = 1
	}
	if !(scale > 0 && scale <= 1 && jobScale > 0 && jobScale <= 1) {
		return nil, fmt.Errorf("scale %g, %g: want fractions above 0, at most 1", scale, jobScale)
	}
	scaled := func(n int) int { return max(1, int(math.Round(float64(n)*scale))) }
	scaledJobs := func(n int) int { return max(1, int(math.Round(float64(n)*jobScale))) }
	rng := rand.New(rand.NewPCG(seed, 0x5157))
	f := &Farm{}
	seen := map[string]bool{}
	n := 0
	for _, g := range w.Hosts {
		for i := range scaled(g.N) {
			alloc := g.Allocs[i%len(g.Allocs)]
			if !seen[alloc] {
				seen[alloc] = true
				f.Allocs = append(f.Allocs, Alloc{ID: alloc, Facility: g.Facility})
			}
			id := fmt.Sprintf("host%05d", n)
			n++
			tags := append([]string{alloc, id}, g.Tags[i%len(g.Tags)]...)
			slices.Sort(tags)
			f.Hosts = append(f.Hosts, Host{ID: id, Facility: g.Facility, Alloc: alloc, Tags: slices.Compact(tags),
				Cores: g.Cores[i%len(g.Cores)], Mem: g.Mem[i%len(g.Mem)],
				GPUs: g.GPUs[i%len(g.GPUs)], GPUMem: g.GPUMem[i%len(g.GPUMem)]})
		}
	}
	for _, s := range w.Subs {
		s.Size = max(100, int64(math.Round(float64(s.Size)*scale)))
		s.Burst = max(100, int64(math.Round(float64(s.Burst)*scale)))
		f.Subs = append(f.Subs, s)
	}
	for _, jt := range w.Jobs {
		at := jt.Start
		for i := range scaledJobs(jt.Count) {
			if i > 0 {
				gap := jt.Every
				if jt.Poisson {
					gap = time.Duration(rng.ExpFloat64() * float64(jt.Every))
				}
				at += gap
			}
			j := Job{ID: fmt.Sprintf("%s-%05d", jt.Name, i), Show: jt.Show, Arrive: at, MaxCores: jt.MaxCores,
				Priority: jt.Priority[0] + rng.Int64N(jt.Priority[1]-jt.Priority[0]+1)}
			for _, lt := range jt.Layers {
				l := drawLayer(rng, lt, jt.Layers)
				f.Frames += len(l.Frames)
				j.Layers = append(j.Layers, l)
			}
			f.Jobs = append(f.Jobs, j)
		}
	}
	slices.SortStableFunc(f.Jobs, func(a, b Job) int { return int(a.Arrive - b.Arrive) })
	return f, nil
}

func drawLayer(rng *rand.Rand, lt LayerTemplate, all []LayerTemplate) Layer {
	k := rng.IntN(max(len(lt.Cores), len(lt.Mem)))
	l := Layer{Name: lt.Name, Cores: lt.Cores[k%len(lt.Cores)], Mem: lt.Mem[k%len(lt.Mem)], GPUs: lt.GPUs,
		GPUMem: lt.GPUMem, Tags: lt.Tags[rng.IntN(len(lt.Tags))], After: -1, Threadable: lt.Threadable,
		Setup: lt.Setup}
	if lt.After != "" {
		l.After = slices.IndexFunc(all, func(o LayerTemplate) bool { return o.Name == lt.After })
	}
	frames := lt.Frames[0] + rng.IntN(lt.Frames[1]-lt.Frames[0]+1)
	l.Frames = make([]Frame, frames)
	for i := range l.Frames {
		rt := float64(lt.Runtime)
		if lt.RuntimeMax > lt.Runtime {
			rt += rng.Float64() * float64(lt.RuntimeMax-lt.Runtime)
		}
		if lt.Spread > 0 {
			rt *= math.Exp(lt.Spread * rng.NormFloat64())
		}
		used := lt.Used[0] + rng.Float64()*(lt.Used[1]-lt.Used[0])
		l.Frames[i] = Frame{Runtime: max(time.Second, time.Duration(rt)), Used: int64(used * float64(l.Mem))}
	}
	return l
}

// Size is how many hosts and (on average) frames the workload draws at
// full size.
func (w *Workload) Size() (hosts int, frames float64) {
	for _, g := range w.Hosts {
		hosts += g.N
	}
	for _, j := range w.Jobs {
		for _, l := range j.Layers {
			frames += float64(j.Count) * float64(l.Frames[0]+l.Frames[1]) / 2
		}
	}
	return hosts, frames
}
