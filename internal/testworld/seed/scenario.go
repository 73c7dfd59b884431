package seed

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cuesched/cuesched/internal/scenario"
	"github.com/cuesched/cuesched/match"
)

// unlimitedJobCores is what a scenario job without a core max gets:
// job_resource has no unlimited value, so a max no scenario farm reaches.
const unlimitedJobCores = 100_000_000

// unlimitedJobGPUs is the same for GPUs.
const unlimitedJobGPUs = 1_000_000

// FromScenario is the farm a scenario describes, for Load: its allocations
// in facility local (ALLOC becomes local.ALLOC with tag ALLOC), its hosts UP
// and OPEN, scheduler-managed shows with their subscriptions, the folders
// its jobs use under their shows' root folders, its limits and its jobs,
// layers in file order. A layer's after= counts from now, the seeded farm's
// clock. It refuses, naming file:line, what the database cannot hold as the
// scenario means it: tag pressure (contested), running frames, idle
// capacity below a host's total, usage already counted (used=, running=),
// a layer's history (finished=, maxrss=, memfail),
// and the values this package reads as "default" (zero memory, priority,
// job maxima).
func FromScenario(sc *scenario.Scenario, now time.Time) (*Farm, error) {
	b := &farmBuilder{sc: sc, f: &Farm{}, shows: map[string]*Show{}}
	for _, c := range sc.Contested {
		b.refuse(c.Line, "contested %s: tag pressure is judged by the scheduler's cache, not held in the database", c.Tag)
	}
	for _, r := range sc.Running {
		b.refuse(r.Line, "running %s %s: frames already running need procs", r.Layer, r.Host)
	}
	b.hosts()
	b.subs()
	for _, l := range sc.Limits {
		if l.Running != 0 {
			b.refuse(l.Line, "limit %s: running= needs running frames", l.Name)
		}
		b.f.Limits = append(b.f.Limits, Limit{Name: l.Name, Max: l.Max})
	}
	b.jobs()
	b.layers(now)
	for _, name := range b.showOrder {
		b.f.Shows = append(b.f.Shows, *b.shows[name])
	}
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	return b.f, nil
}

type farmBuilder struct {
	sc        *scenario.Scenario
	f         *Farm
	shows     map[string]*Show
	showOrder []string
	errs      []error
}

func (b *farmBuilder) refuse(line int, format string, a ...any) {
	b.errs = append(b.errs, fmt.Errorf("%s:%d: cannot seed: %s", b.sc.File, line, fmt.Sprintf(format, a...)))
}

func (b *farmBuilder) show(name string) *Show {
	if b.shows[name] == nil {
		b.shows[name] = &Show{Name: name, Managed: true}
		b.showOrder = append(b.showOrder, name)
	}
	return b.shows[name]
}

func (b *farmBuilder) alloc(name string) string {
	a := Allocation{Name: "local." + name, Tag: name}
	if !slices.Contains(b.f.Allocations, a) {
		b.f.Allocations = append(b.f.Allocations, a)
	}
	return a.Name
}

func (b *farmBuilder) hosts() {
	for _, h := range b.sc.Hosts {
		var why string
		switch {
		case h.Facility != "local":
			why = "facility " + h.Facility + ": the scenario keys allocations by name alone, so only local is seeded"
		case h.Name != strings.ToLower(h.Name):
			why = "the scenario tags a host with its lower-cased name: give the name in lower case"
		case h.IdleCores != h.Cores || h.IdleMem != h.Mem:
			why = "idle capacity below the total needs running procs"
		case h.MemFree == 0 || h.TempFree == 0:
			why = `memfree=0 or a free temp of 0 reads as "all of it" here`
		case h.TempTotal != 100*GB:
			why = "the temp total is always 100G here"
		}
		if why != "" {
			b.refuse(h.Line, "host %s: %s", h.Name, why)
			continue
		}
		b.f.Hosts = append(b.f.Hosts, Host{Name: h.Name, Alloc: b.alloc(h.Alloc), Cores: h.Cores, Mem: h.Mem,
			GPUs: h.GPUs, GPUMem: h.GPUMem, OS: h.OS, ThreadMode: int(h.Mode), ManualTags: slices.Clone(h.Tags),
			MemFree: h.MemFree, TempFree: h.TempFree})
	}
}

func (b *farmBuilder) subs() {
	for _, s := range b.sc.Subs {
		if s.Used != 0 {
			b.refuse(s.Line, "sub %s %s: used= is usage, which only procs hold", s.Show, s.Alloc)
		}
		sh := b.show(s.Show)
		sh.Subscriptions = append(sh.Subscriptions, Subscription{Alloc: b.alloc(s.Alloc), Size: s.Size, Burst: s.Burst})
	}
}

// jobs adds the jobs, without layers, and the folders they use.
func (b *farmBuilder) jobs() {
	folders := map[string]scenario.Folder{}
	for _, fo := range b.sc.Folders {
		folders[fo.Name] = fo
	}
	folderShow := map[string]string{}
	for _, j := range b.sc.Jobs {
		b.show(j.Show)
		job := Job{Name: j.Name, Show: j.Show, OS: j.OS, Priority: j.Priority,
			MaxCores: orUnlimited(j.MaxCores, unlimitedJobCores), MaxGPUs: orUnlimited(j.MaxGPUs, unlimitedJobGPUs)}
		if j.Priority == 0 || j.MaxCores == 0 || j.MaxGPUs == 0 {
			b.refuse(j.Line, "job %s: priority, maxcores and maxgpus of 0 read as Cuebot's defaults here", j.Name)
		}
		fo, declared := folders[j.Folder]
		switch {
		case j.Folder == j.Show+"-root":
			if declared && (fo.MaxCores != -1 || fo.MaxGPUs != -1) {
				b.refuse(fo.Line, "folder %s: caps on a show's root folder; give the job folder=NAME", fo.Name)
			}
		case folderShow[j.Folder] != "" && folderShow[j.Folder] != j.Show:
			b.refuse(j.Line, "job %s: folder %s is also used by show %s, and a folder belongs to one show",
				j.Name, j.Folder, folderShow[j.Folder])
		default:
			job.Folder = j.Folder
			if folderShow[j.Folder] == "" {
				folderShow[j.Folder] = j.Show
				caps := Folder{Show: j.Show, Name: j.Folder, MaxCores: NoCap, MaxGPUs: NoCap}
				if declared {
					caps.MaxCores, caps.MaxGPUs = fo.MaxCores, fo.MaxGPUs
				}
				b.f.Folders = append(b.f.Folders, caps)
			}
		}
		b.f.Jobs = append(b.f.Jobs, job)
	}
}

// layers adds the layers to their jobs, in file order.
func (b *farmBuilder) layers(now time.Time) {
	limits := map[string]bool{}
	for _, l := range b.sc.Limits {
		limits[l.Name] = true
	}
	for _, l := range b.sc.Layers {
		for _, name := range l.Limits {
			if !limits[name] {
				b.refuse(l.Line, "layer %s: limit %s is not declared (matching ignores it; the database has no such record)", l.Name, name)
			}
		}
		if l.Mem == 0 || strings.TrimSpace(l.Tags) == "" {
			b.refuse(l.Line, "layer %s: mem=0 or empty tags read as defaults here", l.Name)
		}
		if l.Finished != 0 || l.MaxRSS != 0 || l.MemFailed {
			b.refuse(l.Line, "layer %s: finished=, maxrss= and memfail are history, which only frames that ran hold", l.Name)
		}
		layer := Layer{Name: l.Name, Frames: l.Frames, Cores: l.Cores, CoresMax: l.CoresMax, Mem: l.Mem, GPUs: l.GPUs,
			GPUMem: l.GPUMem, Threadable: l.Threadable, Services: strings.Join(l.Services, ","), Tags: l.Tags,
			Limits: slices.Clone(l.Limits)}
		if l.After != 0 {
			layer.StartAfter = now.Add(l.After)
		}
		i := slices.IndexFunc(b.f.Jobs, func(j Job) bool { return j.Name == l.Job })
		b.f.Jobs[i].Layers = append(b.f.Jobs[i].Layers, layer)
	}
}

func orUnlimited(max, unlimited int64) int64 {
	if max == match.NoMax {
		return unlimited
	}
	return max
}
