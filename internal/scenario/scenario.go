// Package scenario reads the golden-scenario language (README.md): a small
// farm, the work waiting on it, and expectations of what is booked, what
// waits and why. It parses a file into a plain model, builds match's inputs
// from it, plans its rounds with match.Plan (Run), and checks its expect
// lines against an Outcome, which any runner may fill: match alone, the
// scheduler's loop (schedulertest.RunScenario), or explain against a seeded
// database. It does no I/O but reading the file it is given.
package scenario

import (
	"time"

	"github.com/cuesched/cuesched/match"
)

// Now is the scenario's clock: layers' after= is relative to it.
var Now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Scenario is one parsed file. Cores are core units (100 = one core), sizes
// KB, as in Cuebot's database. Names double as ids. Line is where each
// directive stands in File.
type Scenario struct {
	File      string
	Hosts     []Host
	Subs      []Sub
	Folders   []Folder
	Jobs      []Job
	Limits    []Limit
	Layers    []Layer
	Contested []Contested
	Running   []Running
	Ran       []Ran
	Reserves  []Reserve
	Options   Options
	Expects   []Expect
}

// Host is a render host. It carries its allocation's name and its own name
// as tags, plus Tags.
type Host struct {
	Line                     int
	Name                     string
	Cores, Mem, GPUs, GPUMem int64
	IdleCores, IdleMem       int64
	Alloc, Facility, OS      string
	Tags                     []string // lower-cased, besides the allocation and the name
	Mode                     match.ThreadMode
	MemFree                  int64
	TempFree, TempTotal      int64
}

// Sub is a show's subscription to an allocation.
type Sub struct {
	Line              int
	Show, Alloc       string
	Size, Burst, Used int64 // Used: cores in use before the first round
}

// Folder is a folder's caps; -1 is unlimited.
type Folder struct {
	Line              int
	Name              string
	MaxCores, MaxGPUs int64
}

// Job is a job; a max of match.NoMax is none.
type Job struct {
	Line              int
	Name, Show        string
	Folder            string // SHOW-root unless given
	OS                string
	Priority          int64
	MaxCores, MaxGPUs int64
}

// Limit is a limit record with the frames already running under it.
type Limit struct {
	Line         int
	Name         string
	Max, Running int64
}

// Layer is a layer of waiting frames, numbered 1 to Frames.
type Layer struct {
	Line                     int
	Name, Job                string
	Frames                   int
	Cores, Mem, GPUs, GPUMem int64
	Tags                     string // '|'-separated, as layer.str_tags
	Threadable               bool
	CoresMax                 int64
	Services, Limits         []string
	After                    time.Duration // starts at Now+After
	// Finished, MaxRSS and MemFailed are its history (match.History):
	// frames finished, the most memory one used, a memory failure.
	Finished, MaxRSS int64
	MemFailed        bool
	// Runs are the mean run times of its, its job's and its service's
	// finished frames (match.Runs: reservations' backfill).
	Runs match.Runs
}

// Contested is a tag contested for every round (tag pressure).
type Contested struct {
	Line          int
	Facility, Tag string
}

// Running is N frames of Layer already running on Host at the layer's
// minimums before the first round.
type Running struct {
	Line        int
	Layer, Host string
	N           int
}

// Ran is a frame of Layer that ran on Host Ago before the scenario's
// clock, as the host index remembers it (match.Host.Ran: locality).
type Ran struct {
	Line        int
	Layer, Host string
	Ago         time.Duration
}

// Reserve is a reservation of Host for Layer (match.Reservation) starting
// In after the scenario's clock, or at an unknown start (Known false).
type Reserve struct {
	Line        int
	Layer, Host string
	In          time.Duration
	Known       bool
}

// Options are the settings of the rounds.
type Options struct {
	Line    int    // 0 when the file has no options line
	Policy  string // bestfit or epvm
	Order   string // lottery or strict
	Seed    int64  // round r uses Seed+r
	Max     int    // placements a round; 0 unbounded
	Selfish []string
	Allocs  []string
	Rounds  int
	Finish  int  // procs ending between rounds, oldest first
	Warm    bool // locality (match.Options.Locality)
	// Memory and Headroom are match.Memory: the shows booked with memory
	// from history, and the share added to what their frames used.
	Memory   []string
	Headroom float64
}

// Expect kinds.
const (
	ExpectPlaced = "placed" // Layer Op N: frames placed over all rounds
	ExpectOn     = "on"     // Host Layer Op N: of them on Host
	ExpectSub    = "sub"    // Show Alloc Op N: subscription cores in use at the end (whole cores)
	ExpectWait   = "wait"   // Layer Reason [Text]: the last round's wait, Text in its detail
	ExpectNoWait = "nowait" // Layer: no wait in the last round
)

// Expect is one expect line.
type Expect struct {
	Line        int
	Kind        string
	Layer, Host string
	Show, Alloc string
	Op          string // = >= <=
	N           int64
	Reason      string
	Text        string
	Source      string // the line's words after "expect"
}
