// Package workload is the simulator's model of a farm and the work that
// comes to it (package sim runs it through the real loop): hosts, shows'
// subscriptions, and job templates whose jobs arrive over time with layers
// of drawn widths, memory, tags, dependencies, frame durations and actual
// memory use. A workload is read from a scenario file (README.md beside the
// committed ones in scenarios/) and drawn into a concrete Farm with a seed
// (Draw): the same file, seed and scale give the same farm.
package workload

import "time"

// Workload is a parsed scenario file.
type Workload struct {
	Name  string // the file's name without .sim
	About string // one line: what it models
	File  string
	Hosts []HostGroup
	Subs  []Sub
	Jobs  []JobTemplate
}

// HostGroup is N hosts; each list is cycled by the host's index in the
// group (the i-th host takes element i % len), so lists of lengths 4 and 3
// make hosts of every combination.
type HostGroup struct {
	N        int
	Cores    []int64 // core units
	Mem      []int64 // KB
	GPUs     []int64
	GPUMem   []int64 // KB
	Allocs   []string
	Tags     [][]string // extra tags of each host, beyond its allocation's
	Facility string
	Line     int
}

// Sub is a show's subscription to an allocation, in core units.
type Sub struct {
	Show, Alloc string
	Size, Burst int64
	Line        int
}

// JobTemplate makes Count jobs: the i-th arrives at Start + i*Every, or with
// exponential gaps of mean Every when Poisson.
type JobTemplate struct {
	Name, Show   string
	Count        int
	Start, Every time.Duration
	Poisson      bool
	Priority     [2]int64 // drawn uniformly from the range
	MaxCores     int64    // core units; 0: no cap
	Layers       []LayerTemplate
	Line         int
}

// LayerTemplate is a layer of every job of its template. Lists are drawn
// by one index per layer (element index % len), so equal-length lists of
// cores and memory go together; ranges are drawn uniformly.
type LayerTemplate struct {
	Name    string
	Frames  [2]int
	Cores   []int64 // core units
	Mem     []int64 // KB
	GPUs    int64
	GPUMem  int64      // KB
	Used    [2]float64 // actual memory use per frame, a fraction of Mem
	Runtime time.Duration
	// RuntimeMax, when above 0, makes each frame's runtime uniform from
	// Runtime to RuntimeMax (runtime=A-B) before Spread.
	RuntimeMax time.Duration
	Spread     float64 // sigma of the log-normal runtime around Runtime (its median)
	// Setup is how much longer a frame runs on a host not warm for its
	// layer (package sim: its caches and files are not there yet).
	Setup      time.Duration
	Tags       [][]string // choices, drawn per layer; each a layer's '|' tags
	After      string     // a layer of the same job this one waits for
	Threadable bool
	Line       int
}

// GB is a gigabyte in Cuebot's KB.
const GB = 1048576
