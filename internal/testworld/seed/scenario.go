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
// and the values this package reads as "default" (zero memory, priority,
// job maxima).
func FromScenario(sc *scenario.Scenario, now time.Time) (*Farm, error) {
	f := &Farm{}
	var errs []error
	refuse := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: cannot seed: %s", sc.File, line, fmt.Sprintf(format, a...)))
	}
	for _, c := range sc.Contested {
		refuse(c.Line, "contested %s: tag pressure is judged by the scheduler's cache, not held in the database", c.Tag)
	}
	for _, r := range sc.Running {
		refuse(r.Line, "running %s %s: frames already running need procs", r.Layer, r.Host)
	}
	addAlloc := func(name string) {
		a := Allocation{Name: "local." + name, Tag: name}
		if !slices.Contains(f.Allocations, a) {
			f.Allocations = append(f.Allocations, a)
		}
	}
	for _, h := range sc.Hosts {
		host, err := scenarioHost(h)
		if err != nil {
			refuse(h.Line, "host %s: %v", h.Name, err)
			continue
		}
		addAlloc(h.Alloc)
		f.Hosts = append(f.Hosts, host)
	}
	shows := map[string]*Show{}
	show := func(name string) *Show {
		if shows[name] == nil {
			shows[name] = &Show{Name: name, Managed: true}
		}
		return shows[name]
	}
	for _, s := range sc.Subs {
		if s.Used != 0 {
			refuse(s.Line, "sub %s %s: used= is usage, which only procs hold", s.Show, s.Alloc)
		}
		addAlloc(s.Alloc)
		sh := show(s.Show)
		sh.Subscriptions = append(sh.Subscriptions, Subscription{Alloc: "local." + s.Alloc, Size: s.Size, Burst: s.Burst})
	}
	for _, l := range sc.Limits {
		if l.Running != 0 {
			refuse(l.Line, "limit %s: running= needs running frames", l.Name)
		}
		f.Limits = append(f.Limits, Limit{Name: l.Name, Max: l.Max})
	}
	jobs, err := scenarioJobs(sc, now, show, f)
	errs = append(errs, err)
	f.Jobs = jobs
	for _, s := range sc.Subs {
		if sh := shows[s.Show]; sh != nil {
			f.Shows = append(f.Shows, *sh)
			delete(shows, s.Show)
		}
	}
	for _, j := range sc.Jobs {
		if sh := shows[j.Show]; sh != nil {
			f.Shows = append(f.Shows, *sh)
			delete(shows, j.Show)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

func scenarioHost(h scenario.Host) (Host, error) {
	switch {
	case h.Facility != "local":
		return Host{}, fmt.Errorf("facility %s: the scenario keys allocations by name alone, so only local is seeded", h.Facility)
	case h.Name != strings.ToLower(h.Name):
		return Host{}, errors.New("the scenario tags a host with its lower-cased name: give the name in lower case")
	case h.IdleCores != h.Cores || h.IdleMem != h.Mem:
		return Host{}, errors.New("idle capacity below the total needs running procs")
	case h.MemFree == 0 || h.TempFree == 0:
		return Host{}, errors.New("memfree=0 or a free temp of 0 reads as \"all of it\" here")
	case h.TempTotal != 100*GB:
		return Host{}, errors.New("the temp total is always 100G here")
	}
	return Host{Name: h.Name, Alloc: "local." + h.Alloc, Cores: h.Cores, Mem: h.Mem, GPUs: h.GPUs, GPUMem: h.GPUMem,
		OS: h.OS, ThreadMode: int(h.Mode), ManualTags: slices.Clone(h.Tags), MemFree: h.MemFree, TempFree: h.TempFree}, nil
}

// scenarioJobs builds the jobs with their layers and adds the folders they
// use to f.
func scenarioJobs(sc *scenario.Scenario, now time.Time, show func(string) *Show, f *Farm) ([]Job, error) {
	var errs []error
	refuse := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: cannot seed: %s", sc.File, line, fmt.Sprintf(format, a...)))
	}
	folders := map[string]scenario.Folder{}
	for _, fo := range sc.Folders {
		folders[fo.Name] = fo
	}
	folderShow := map[string]string{}
	var jobs []Job
	for _, j := range sc.Jobs {
		show(j.Show)
		job := Job{Name: j.Name, Show: j.Show, OS: j.OS, Priority: j.Priority,
			MaxCores: orUnlimited(j.MaxCores, unlimitedJobCores), MaxGPUs: orUnlimited(j.MaxGPUs, unlimitedJobGPUs)}
		if j.Priority == 0 || j.MaxCores == 0 || j.MaxGPUs == 0 {
			refuse(j.Line, "job %s: priority, maxcores and maxgpus of 0 read as Cuebot's defaults here", j.Name)
		}
		fo, declared := folders[j.Folder]
		switch {
		case j.Folder == j.Show+"-root":
			if declared && (fo.MaxCores != -1 || fo.MaxGPUs != -1) {
				refuse(fo.Line, "folder %s: caps on a show's root folder; give the job folder=NAME", fo.Name)
			}
		case folderShow[j.Folder] != "" && folderShow[j.Folder] != j.Show:
			refuse(j.Line, "job %s: folder %s is also used by show %s, and a folder belongs to one show", j.Name, j.Folder, folderShow[j.Folder])
		default:
			job.Folder = j.Folder
			if folderShow[j.Folder] == "" {
				folderShow[j.Folder] = j.Show
				caps := Folder{Show: j.Show, Name: j.Folder, MaxCores: NoCap, MaxGPUs: NoCap}
				if declared {
					caps.MaxCores, caps.MaxGPUs = fo.MaxCores, fo.MaxGPUs
				}
				f.Folders = append(f.Folders, caps)
			}
		}
		jobs = append(jobs, job)
	}
	limits := map[string]bool{}
	for _, l := range sc.Limits {
		limits[l.Name] = true
	}
	for _, l := range sc.Layers {
		i := slices.IndexFunc(jobs, func(j Job) bool { return j.Name == l.Job })
		for _, name := range l.Limits {
			if !limits[name] {
				refuse(l.Line, "layer %s: limit %s is not declared (matching ignores it; the database has no such record)", l.Name, name)
			}
		}
		if l.Mem == 0 || strings.TrimSpace(l.Tags) == "" {
			refuse(l.Line, "layer %s: mem=0 or empty tags read as defaults here", l.Name)
		}
		layer := Layer{Name: l.Name, Frames: l.Frames, Cores: l.Cores, CoresMax: l.CoresMax, Mem: l.Mem, GPUs: l.GPUs,
			GPUMem: l.GPUMem, Threadable: l.Threadable, Services: strings.Join(l.Services, ","), Tags: l.Tags,
			Limits: slices.Clone(l.Limits)}
		if l.After != 0 {
			layer.StartAfter = now.Add(l.After)
		}
		jobs[i].Layers = append(jobs[i].Layers, layer)
	}
	return jobs, errors.Join(errs...)
}

func orUnlimited(max, unlimited int64) int64 {
	if max == match.NoMax {
		return unlimited
	}
	return max
}
