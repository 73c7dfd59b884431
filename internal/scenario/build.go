package scenario

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// Inputs are match's inputs for a scenario, built fresh on every call: a
// runner may consume them (take frames off layers, apply placements to
// caps).
type Inputs struct {
	Hosts  []match.Host
	Caps   *matchtest.Caps
	Layers []*match.Layer // in file order, each with all its frames
	// Running are the running lines' frames, one placement each, in file
	// order (the oldest first), neither taken from the hosts nor applied to
	// the caps yet.
	Running   []match.Placement
	Contested []Contested
	// Options are the first round's; round r uses Seed+r.
	Options match.Options
}

// Inputs builds match's inputs from the scenario.
func (s *Scenario) Inputs() *Inputs {
	in := &Inputs{Caps: matchtest.NewCaps(), Contested: slices.Clone(s.Contested), Options: s.matchOptions()}
	hosts := map[string]match.Host{}
	for _, h := range s.Hosts {
		mh := matchHost(h)
		for _, r := range s.Ran {
			if r.Host == h.Name {
				i := slices.IndexFunc(s.Layers, func(l Layer) bool { return l.Name == r.Layer })
				mh.Ran = append(mh.Ran, match.Ran{Layer: r.Layer, Job: s.Layers[i].Job, At: Now.Add(-r.Ago)})
			}
		}
		in.Hosts = append(in.Hosts, mh)
		hosts[h.Name] = mh
	}
	for _, sub := range s.Subs {
		in.Caps.Subs[matchtest.SubKey{Show: sub.Show, Alloc: sub.Alloc}] = match.Subscription{
			Size: sub.Size, Burst: sub.Burst, Cores: sub.Used}
	}
	for _, f := range s.Folders {
		in.Caps.Folders[f.Name] = match.Cap{MaxCores: f.MaxCores, MaxGPUs: f.MaxGPUs}
	}
	jobs := map[string]Job{}
	for _, j := range s.Jobs {
		jobs[j.Name] = j
		in.Caps.Jobs[j.Name] = match.Cap{MaxCores: j.MaxCores, MaxGPUs: j.MaxGPUs}
	}
	for _, l := range s.Limits {
		in.Caps.Limits[l.Name] = match.Limit{Max: l.Max, Running: l.Running}
	}
	layers := map[string]*match.Layer{}
	for _, l := range s.Layers {
		ml := matchLayer(l, jobs[l.Job])
		in.Layers = append(in.Layers, ml)
		layers[l.Name] = ml
	}
	var resv []match.Reservation
	for _, r := range s.Reserves {
		mr := match.Reservation{Layer: r.Layer, LayerName: r.Layer, Host: r.Host, HostName: r.Host, Made: Now}
		if r.Known {
			mr.Start = Now.Add(r.In)
		}
		resv = append(resv, mr)
	}
	in.Options.Reservations = match.NewReservationSet(resv)
	for _, r := range s.Running {
		l := layers[r.Layer]
		for range r.N {
			in.Running = append(in.Running, match.Placement{Layer: l, Host: hosts[r.Host], Size: l.Min})
		}
	}
	return in
}

// matchHost: a host carries its allocation's name and its own as tags.
func matchHost(h Host) match.Host {
	tags := append([]string{h.Alloc, strings.ToLower(h.Name)}, h.Tags...)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	return match.Host{
		ID: h.Name, Name: h.Name, Facility: h.Facility, Alloc: h.Alloc, OS: h.OS, ThreadMode: h.Mode, Tags: tags,
		Total:   match.Resources{Cores: h.Cores, Mem: h.Mem, GPUs: h.GPUs, GPUMem: h.GPUMem},
		Idle:    match.Resources{Cores: h.IdleCores, Mem: h.IdleMem, GPUs: h.GPUs, GPUMem: h.GPUMem},
		MemFree: h.MemFree, TempFree: h.TempFree, TempTotal: h.TempTotal,
	}
}

// matchLayer builds a layer of the job with frames 1 to Frames, named as
// Cuebot names frames (0001-LAYER).
func matchLayer(l Layer, j Job) *match.Layer {
	ml := &match.Layer{
		ID: l.Name, Name: l.Name, JobID: j.Name, JobName: j.Name, ShowID: j.Show, ShowName: j.Show, FolderID: j.Folder,
		Facility: "local", Priority: j.Priority, OS: j.OS, Tags: match.ParseTags(l.Tags),
		Min:      match.Resources{Cores: l.Cores, Mem: l.Mem, GPUs: l.GPUs, GPUMem: l.GPUMem},
		CoresMax: l.CoresMax, Threadable: l.Threadable,
		Services: slices.Clone(l.Services), Limits: slices.Clone(l.Limits),
		History: match.History{Finished: l.Finished, MaxRSS: l.MaxRSS, MemFailed: l.MemFailed},
		Runs:    l.Runs,
	}
	if l.After != 0 {
		ml.StartAfter = Now.Add(l.After)
	}
	for i := range l.Frames {
		ml.Frames = append(ml.Frames, match.Frame{ID: fmt.Sprintf("%s/%d", l.Name, i+1), Name: FrameName(l.Name, i+1), Number: int64(i + 1)})
	}
	return ml
}

// FrameName is the name of a layer's frame number n, as Cuebot names it.
func FrameName(layer string, n int) string { return fmt.Sprintf("%04d-%s", n, layer) }

func (s *Scenario) matchOptions() match.Options {
	o := s.Options
	opt := match.Options{Now: Now, Seed: o.Seed, MaxPlacements: o.Max, Order: match.OrderLottery,
		SelfishServices: slices.Clone(o.Selfish), Allocs: slices.Clone(o.Allocs), Locality: o.Warm,
		Memory: match.Memory{Shows: slices.Clone(o.Memory), Headroom: o.Headroom}}
	if o.Policy == "epvm" {
		opt.Policy = match.NewEPVM(0, 0)
	} else {
		opt.Policy = match.BestFit{}
	}
	if o.Order == "strict" {
		opt.Order = match.OrderStrict
	}
	return opt
}
