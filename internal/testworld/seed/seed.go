// Package seed builds render farms in a Cuebot-compatible database for tests,
// the demo and benchmarks: allocations, hosts with their tags and state,
// shows with subscriptions, folders with caps, limits, and jobs of layers of
// frames. Everything is deterministic for a seed (keys included), large farms
// load with COPY, and jobs are launched with Cuebot's own launch sequence so
// that triggers and counts behave as in production.
package seed

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// Allocation is one allocation of a facility ("local.render" in Cuebot's
// facility.name form) and the tag it gives its hosts.
type Allocation struct {
	Name string // facility.name; the facility must exist (local and cloud do)
	Tag  string
}

// Host is one render host. Zero values take sensible defaults: OPEN, UP,
// pinged now, all memory free, "linux", one hostname tag and the
// allocation's tag.
type Host struct {
	Name        string // also the HOSTNAME tag; an address for the simulated farm
	Alloc       string // allocation name, e.g. "local.general"
	Cores       int64  // core units (100 = one core)
	Mem         int64  // KB
	GPUs        int64
	GPUMem      int64 // KB
	OS          string
	ThreadMode  int // 0 AUTO, 1 ALL, 2 VARIABLE
	ManualTags  []string
	HardwareTag []string
	Lock        string // OPEN, LOCKED, NIMBY_LOCKED
	State       string // UP, DOWN, REPAIR, ...
	MemFree     int64  // host_stat.int_mem_free; 0 means all of Mem
	TempFree    int64  // host_stat.int_mcp_free (KB); 0 means 100 GB
	PingAge     time.Duration
}

// Subscription gives a show a share of an allocation.
type Subscription struct {
	Alloc string
	Size  int64 // core units
	Burst int64 // core units
}

// Show is a show with its root folder (named as the show).
type Show struct {
	Name          string
	Managed       bool // show.b_scheduler_managed
	Inactive      bool // show.b_active false
	Subscriptions []Subscription
}

// Folder is a sub-folder of a show's root folder with caps.
type Folder struct {
	Show     string
	Name     string
	MaxCores int64 // -1 unlimited (the default when 0 is given: use NoCap)
	MaxGPUs  int64
}

// NoCap is the "unlimited" value of folder and limit caps.
const NoCap = -1

// Limit is a limit record.
type Limit struct {
	Name string
	Max  int64
}

// Layer is one layer of a job.
type Layer struct {
	Name       string
	Cmd        string // default "echo #IFRAME#"
	Range      string // frame-set, default "1-<Frames>"
	Frames     int    // used when Range is empty
	ChunkSize  int64
	Cores      int64 // layer.int_cores_min in core units (may be 0, negative or 1-99)
	CoresMax   int64
	Mem        int64 // KB
	GPUs       int64
	GPUMem     int64
	Threadable bool
	Services   string // default "default"
	Tags       string // '|'-separated; default "general", the fresh Cuebot's default allocation tag
	Limits     []string
	StartAfter time.Time
	// Depend gives every frame of the layer one unresolved depend, so launch
	// puts them in DEPEND; ReleaseDepends makes them WAITING.
	Depend bool
}

// Job is one job to launch.
type Job struct {
	Name     string // unique; also the visible name
	Show     string
	Folder   string // "" = the show's root folder
	Dept     string // dept name, default "Unknown"
	Facility string // default "local"
	User     string
	Shot     string
	LogDir   string
	UID      int64 // 0 = NULL
	OS       string
	Priority int64
	MaxCores int64 // job_resource.int_max_cores; 0 = Cuebot's default
	MaxGPUs  int64
	Paused   bool
	Env      map[string]string
	Layers   []Layer
}

// Farm is a whole farm to seed, in dependency order.
type Farm struct {
	Allocations []Allocation
	Hosts       []Host
	Shows       []Show
	Folders     []Folder
	Limits      []Limit
	Jobs        []Job
}

// FrameCount is the number of frames the farm's jobs hold.
func (f *Farm) FrameCount() int {
	n := 0
	for _, j := range f.Jobs {
		for _, l := range j.Layers {
			n += len(l.frameNumbers())
		}
	}
	return n
}

func (l *Layer) frameNumbers() []int64 {
	if l.Range == "" {
		out := make([]int64, l.Frames)
		for i := range out {
			out[i] = int64(i + 1)
		}
		return out
	}
	return parseSimpleRange(l.Range)
}

// parseSimpleRange reads the frame-set forms the seeder writes: "a-b",
// "a-bxN" and comma lists of those or single numbers.
func parseSimpleRange(s string) []int64 {
	var out []int64
	for _, part := range strings.Split(s, ",") {
		var a, b, step int64 = 0, 0, 1
		switch {
		case strings.Contains(part, "x"):
			fmt.Sscanf(part, "%d-%dx%d", &a, &b, &step)
		case strings.Contains(part, "-"):
			fmt.Sscanf(part, "%d-%d", &a, &b)
		default:
			fmt.Sscanf(part, "%d", &a)
			b = a
		}
		if step < 1 {
			step = 1
		}
		for n := a; n <= b; n += step {
			out = append(out, n)
		}
	}
	return out
}

// GB is one gigabyte in Cuebot's KB units.
const GB = 1048576

// Core is one core in Cuebot's core units.
const Core = 100

// PeerStress is the peer stress farm of DESIGN.md: 1,200 hosts cycling
// 16/32/64/128 cores and 32/64/128/256 GB in 3 allocations, each host with
// its allocation tag, one of 8 manual tags and its hostname tag; one managed
// show subscribed to all three with a burst of 9,000,000 core units; 300 jobs
// x 4 layers x 5 frames with minimums cycling 1/2/4/8 cores and 2/4/8/16 GB,
// threadable, a third of the layers tagged with a manual tag and the rest
// with an allocation tag, priorities 1-100, no job cap. Host names are loopback
// addresses so the simulated farm can give each its own RQD.
func PeerStress(seed uint64) *Farm {
	return Stress(seed, 1200, 300)
}

// SuiteStress is the stress farm the tests that book a whole farm use: the
// peer stress farm under `make chaos` and `make bench` (CUESCHED_CHAOS=1 or
// CUESCHED_BENCH=1), and in the default suite a quarter of it of the same
// shape: 300 hosts covering every allocation, size and manual tag, 75 jobs,
// 1,500 frames, the same clusters. What a test asserts holds at either
// size; the full size costs the default suite minutes it must not take.
func SuiteStress(seed uint64) *Farm {
	if FullSize() {
		return PeerStress(seed)
	}
	return Stress(seed, 300, 75)
}

// FullSize reports whether the tests run at full size (make chaos, make
// bench) rather than the default suite's.
func FullSize() bool {
	return os.Getenv("CUESCHED_CHAOS") == "1" || os.Getenv("CUESCHED_BENCH") == "1"
}

// Stress is PeerStress scaled to the given hosts and jobs.
func Stress(seed uint64, hosts, jobs int) *Farm {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	f := &Farm{}
	allocs := []string{"local.stress_a", "local.stress_b", "local.stress_c"}
	for _, a := range allocs {
		f.Allocations = append(f.Allocations, Allocation{Name: a, Tag: strings.TrimPrefix(a, "local.")})
	}
	manual := make([]string, 8)
	for i := range manual {
		manual[i] = fmt.Sprintf("pool%d", i+1)
	}
	coreSteps := []int64{16, 32, 64, 128}
	memSteps := []int64{32, 64, 128, 256}
	for i := 0; i < hosts; i++ {
		f.Hosts = append(f.Hosts, Host{
			Name:       LoopbackName(i),
			Alloc:      allocs[i%3],
			Cores:      coreSteps[i%4] * Core,
			Mem:        memSteps[i%4] * GB,
			ManualTags: []string{manual[i%8]},
		})
	}
	show := Show{Name: "stress", Managed: true}
	for _, a := range allocs {
		show.Subscriptions = append(show.Subscriptions, Subscription{Alloc: a, Size: 9_000_000, Burst: 9_000_000})
	}
	f.Shows = []Show{show}
	coreMin := []int64{1, 2, 4, 8}
	memMin := []int64{2, 4, 8, 16}
	n := 0
	for j := 0; j < jobs; j++ {
		job := Job{
			Name:     fmt.Sprintf("stress-job-%04d", j),
			Show:     "stress",
			Priority: int64(rng.IntN(100) + 1),
			// The farm is defined without job caps: a job's threadable
			// frames may take whole hosts, so Cuebot's default of 100
			// cores would hold frames back the farm has room for.
			MaxCores: 1_000_000,
		}
		for l := 0; l < 4; l++ {
			tags := f.Allocations[n%3].Tag
			if n%3 == 2 {
				tags = manual[rng.IntN(len(manual))]
			}
			job.Layers = append(job.Layers, Layer{
				Name:       fmt.Sprintf("layer%d", l),
				Frames:     5,
				Cores:      coreMin[n%4] * Core,
				Mem:        memMin[n%4] * GB,
				Threadable: true,
				Tags:       tags,
			})
			n++
		}
		f.Jobs = append(f.Jobs, job)
	}
	return f
}

// LoopbackName is the i-th simulated host's name: an address in 127.0.0.0/8
// that is never 127.0.0.1, so each simulated RQD can listen on port 8444.
func LoopbackName(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", 10+i/(250*250), (i/250)%250, i%250+1)
}
