package dispatch

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// recheckFixture is one host (8 cores, 16 GB), one layer of job j in
// folder f, frames f1..f4 WAITING at version 3, a subscription with room.
func recheckFixture() (*lockedState, *match.Layer, match.Host) {
	v := int32(3)
	st := newLockedState()
	st.hosts["h"] = lockedHost{name: "host-h", alloc: "a", lock: "OPEN", state: "UP",
		idle: match.Resources{Cores: 800, Mem: 16 << 20, GPUs: 1, GPUMem: 1 << 20}}
	for _, id := range []string{"f1", "f2", "f3", "f4"} {
		st.frames[id] = lockedFrame{layer: "l", job: "j", state: "WAITING", version: &v, startOK: true,
			jobState: "PENDING", showOK: true, show: "s", showName: "film", folder: "f", dept: "d",
			eligible: time.Unix(1000, 0)}
	}
	st.subs[showAlloc{"s", "a"}] = subRow{cores: 0, burst: 100000}
	st.jobs["j"] = capRow{maxCores: 100000, maxGPUs: 10}
	st.folders["f"] = capRow{maxCores: -1, maxGPUs: -1}
	layer := &match.Layer{ID: "l", JobID: "j", ShowID: "s", FolderID: "f", DeptID: "d"}
	return st, layer, match.Host{ID: "h", Name: "host-h", Alloc: "a"}
}

func TestRecheck(t *testing.T) {
	t.Parallel()
	core := match.Resources{Cores: 200, Mem: 1 << 20}
	for _, tc := range []struct {
		name    string
		change  func(st *lockedState, l *match.Layer, h *match.Host)
		size    match.Resources
		frames  []string // placed in order; default f1..f4
		allowed func(string) bool
		kept    []string
		reasons []DropReason
		detail  string // a regexp the first drop's detail matches
	}{
		{name: "all fit", kept: []string{"f1", "f2", "f3", "f4"}},
		{name: "host idle summed over the batch", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			h := st.hosts["h"]
			h.idle.Cores = 500
			st.hosts["h"] = h
		}, kept: []string{"f1", "f2"}, reasons: []DropReason{DropHostCapacity, DropHostCapacity}, detail: `host-h has .*Cores:100`},
		{name: "memory", size: match.Resources{Cores: 100, Mem: 6 << 20}, kept: []string{"f1", "f2"},
			reasons: []DropReason{DropHostCapacity, DropHostCapacity}},
		{name: "GPUs", size: match.Resources{Cores: 100, GPUs: 1}, kept: []string{"f1"},
			reasons: []DropReason{DropHostCapacity, DropHostCapacity, DropHostCapacity}},
		{name: "host locked", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			h := st.hosts["h"]
			h.lock = "NIMBY_LOCKED"
			st.hosts["h"] = h
		}, frames: []string{"f1"}, reasons: []DropReason{DropHostLocked}, detail: "NIMBY_LOCKED"},
		{name: "host down", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			h := st.hosts["h"]
			h.state = "REBOOTING"
			st.hosts["h"] = h
		}, frames: []string{"f1"}, reasons: []DropReason{DropHostDown}},
		{name: "host moved", change: func(_ *lockedState, _ *match.Layer, h *match.Host) { h.Alloc = "b" },
			frames: []string{"f1"}, reasons: []DropReason{DropHostMoved}},
		{name: "host gone", change: func(st *lockedState, _ *match.Layer, _ *match.Host) { delete(st.hosts, "h") },
			frames: []string{"f1"}, reasons: []DropReason{DropHostGone}},
		{name: "breaker", allowed: func(h string) bool { return h != "host-h" }, frames: []string{"f1"},
			reasons: []DropReason{DropHostBreaker}},
		{name: "reserved for another layer, run unknown", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.now = time.Unix(5000, 0)
			st.reserved["h"] = reservedHost{layer: "wide", layerName: "wide", start: time.Unix(5000+3600, 0)}
		}, frames: []string{"f1"}, reasons: []DropReason{DropReserved}, detail: "reserved for layer wide.*no finished frame"},
		{name: "reserved, ends after", change: func(st *lockedState, l *match.Layer, _ *match.Host) {
			st.now = time.Unix(5000, 0)
			st.reserved["h"] = reservedHost{layer: "wide", layerName: "wide", start: time.Unix(5000+3600, 0)}
			l.Runs.Job = 2 * time.Hour
		}, frames: []string{"f1"}, reasons: []DropReason{DropReserved}, detail: "ends after"},
		{name: "reserved, a backfill", change: func(st *lockedState, l *match.Layer, _ *match.Host) {
			st.now = time.Unix(5000, 0)
			st.reserved["h"] = reservedHost{layer: "wide", layerName: "wide", start: time.Unix(5000+3600, 0)}
			l.Runs.Layer = 30 * time.Minute
		}, frames: []string{"f1"}, kept: []string{"f1"}},
		{name: "reserved, expired", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.now = time.Unix(5000, 0)
			st.reserved["h"] = reservedHost{layer: "wide", layerName: "wide", start: time.Unix(5000, 0).Add(-time.Hour)}
		}, frames: []string{"f1"}, kept: []string{"f1"}},
		{name: "reserved for its own layer", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.reserved["h"] = reservedHost{layer: "l", layerName: "l"}
		}, frames: []string{"f1"}, kept: []string{"f1"}},
		{name: "frame gone", frames: []string{"f9"}, reasons: []DropReason{DropFrameGone}},
		{name: "frame of another layer", change: func(_ *lockedState, l *match.Layer, _ *match.Host) { l.ID = "other" },
			frames: []string{"f1"}, reasons: []DropReason{DropBadPlacement}},
		{name: "frame version moved", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			f, v := st.frames["f2"], int32(4)
			f.version = &v
			st.frames["f2"] = f
		}, frames: []string{"f1", "f2"}, kept: []string{"f1"}, reasons: []DropReason{DropFrameChanged}, detail: "version 4, matched at 3"},
		{name: "frame version NULL", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			f := st.frames["f1"]
			f.version = nil
			st.frames["f1"] = f
		}, frames: []string{"f1"}, reasons: []DropReason{DropFrameChanged}, detail: "NULL"},
		{name: "frame running", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			f := st.frames["f1"]
			f.state = "RUNNING"
			st.frames["f1"] = f
		}, frames: []string{"f1"}, reasons: []DropReason{DropFrameChanged}},
		{name: "show unmanaged", change: setFrames(func(f *lockedFrame) { f.showOK = false }), frames: []string{"f1"},
			reasons: []DropReason{DropShowUnmanaged}},
		{name: "job paused", change: setFrames(func(f *lockedFrame) { f.paused = true }), frames: []string{"f1"},
			reasons: []DropReason{DropJobPaused}},
		{name: "job not pending", change: setFrames(func(f *lockedFrame) { f.jobState = "FINISHED" }), frames: []string{"f1"},
			reasons: []DropReason{DropJobNotPending}},
		{name: "start after", change: setFrames(func(f *lockedFrame) { f.startOK = false }), frames: []string{"f1"},
			reasons: []DropReason{DropStartAfter}},
		{name: "job moved folder", change: setFrames(func(f *lockedFrame) { f.folder = "g" }), frames: []string{"f1"},
			reasons: []DropReason{DropJobMoved}},
		{name: "no subscription", change: func(st *lockedState, _ *match.Layer, _ *match.Host) { clear(st.subs) },
			frames: []string{"f1"}, reasons: []DropReason{DropNoSubscription}},
		{name: "burst summed", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.subs[showAlloc{"s", "a"}] = subRow{cores: 300, burst: 800}
		}, kept: []string{"f1", "f2"}, reasons: []DropReason{DropBurst, DropBurst}, detail: `300\+400\+200 cores over burst 800`},
		{name: "burst zero", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.subs[showAlloc{"s", "a"}] = subRow{}
		}, frames: []string{"f1"}, reasons: []DropReason{DropBurst}},
		{name: "job max cores summed", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.jobs["j"] = capRow{cores: 100, maxCores: 500, maxGPUs: 10}
		}, kept: []string{"f1", "f2"}, reasons: []DropReason{DropJobCap, DropJobCap}},
		{name: "job max GPUs", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.jobs["j"] = capRow{maxCores: 100000, gpus: 1, maxGPUs: 1}
		}, size: match.Resources{Cores: 100, GPUs: 1}, frames: []string{"f1"}, reasons: []DropReason{DropJobCap}},
		{name: "job resource row gone", change: func(st *lockedState, _ *match.Layer, _ *match.Host) { clear(st.jobs) },
			frames: []string{"f1"}, reasons: []DropReason{DropFrameGone}},
		{name: "folder max summed", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.folders["f"] = capRow{cores: 0, maxCores: 600, maxGPUs: -1}
		}, kept: []string{"f1", "f2", "f3"}, reasons: []DropReason{DropFolderCap}},
		{name: "folder without a row has no cap", change: func(st *lockedState, _ *match.Layer, _ *match.Host) { clear(st.folders) },
			kept: []string{"f1", "f2", "f3", "f4"}},
		{name: "limit summed", change: func(st *lockedState, _ *match.Layer, _ *match.Host) {
			st.limits["lic"] = limitRow{running: 1, max: 3}
			st.layerLimits["l"] = []string{"lic"}
		}, kept: []string{"f1", "f2"}, reasons: []DropReason{DropLimit, DropLimit}, detail: `limit lic: 1\+2 running, max 3`},
		{name: "no layer", change: func(_ *lockedState, l *match.Layer, _ *match.Host) { *l = match.Layer{} },
			frames: []string{"f1"}, reasons: []DropReason{DropBadPlacement}},
		{name: "no cores", size: match.Resources{Mem: 1}, frames: []string{"f1"}, reasons: []DropReason{DropBadPlacement}},
		{name: "cores beyond int32", size: match.Resources{Cores: 1 << 40}, frames: []string{"f1"},
			reasons: []DropReason{DropBadPlacement}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, layer, host := recheckFixture()
			if tc.change != nil {
				tc.change(st, layer, &host)
			}
			size := core
			if tc.size != (match.Resources{}) {
				size = tc.size
			}
			frames := tc.frames
			if frames == nil {
				frames = []string{"f1", "f2", "f3", "f4"}
			}
			var ps []match.Placement
			for _, f := range frames {
				l := layer
				if layer.ID == "" {
					l = nil
				}
				ps = append(ps, match.Placement{Layer: l, Frame: match.Frame{ID: f, Version: 3}, Host: host, Size: size})
			}
			kept, drops := recheck(ps, st, tc.allowed)
			var keptIDs []string
			for _, k := range kept {
				keptIDs = append(keptIDs, k.p.Frame.ID)
				if k.version != 3 || k.hostName != "host-h" || k.alloc != "a" || k.showName != "film" ||
					!k.eligible.Equal(time.Unix(1000, 0)) || len(k.procID) != 36 {
					t.Errorf("kept %+v", k)
				}
			}
			var reasons []DropReason
			for _, d := range drops {
				reasons = append(reasons, d.Reason)
			}
			if !slices.Equal(keptIDs, tc.kept) || !slices.Equal(reasons, tc.reasons) {
				t.Fatalf("kept %v dropped %v (%v), want kept %v dropped %v", keptIDs, reasons, drops, tc.kept, tc.reasons)
			}
			if tc.detail != "" && !regexp.MustCompile(tc.detail).MatchString(drops[0].Detail) {
				t.Errorf("detail %q does not match %q", drops[0].Detail, tc.detail)
			}
		})
	}
}

func setFrames(f func(*lockedFrame)) func(*lockedState, *match.Layer, *match.Host) {
	return func(st *lockedState, _ *match.Layer, _ *match.Host) {
		for id, fr := range st.frames {
			f(&fr)
			st.frames[id] = fr
		}
	}
}

// Every kept placement gets its own proc key.
func TestRecheckProcIDs(t *testing.T) {
	t.Parallel()
	st, layer, host := recheckFixture()
	var ps []match.Placement
	for _, f := range []string{"f1", "f2", "f3", "f4"} {
		ps = append(ps, match.Placement{Layer: layer, Frame: match.Frame{ID: f, Version: 3}, Host: host,
			Size: match.Resources{Cores: 100}})
	}
	kept, _ := recheck(ps, st, nil)
	seen := map[string]bool{}
	for _, k := range kept {
		if seen[k.procID] {
			t.Fatalf("proc id %s twice", k.procID)
		}
		seen[k.procID] = true
	}
}

func TestNewUUID(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for range 100 {
		if u := newUUID(); !re.MatchString(u) {
			t.Fatalf("%q is not a version 4 UUID", u)
		}
	}
}

func TestSizer(t *testing.T) {
	t.Parallel()
	s := newSizer(2, 16)
	steps := []struct {
		do   string // c: contended, k<n>: committed n
		n    int
		want int
	}{
		{"", 0, 16},
		{"c", 0, 8}, {"c", 0, 4}, {"c", 0, 2}, {"c", 0, 2}, // never below min
		{"k", 1, 2},                                           // a partial batch does not grow it
		{"k", 2, 4}, {"k", 4, 8}, {"k", 8, 16}, {"k", 16, 16}, // never above max
		{"c", 0, 8}, {"k", 20, 16},
	}
	for i, st := range steps {
		switch st.do {
		case "c":
			s.contended(1)
		case "k":
			s.committed(1, st.n)
		}
		if got := s.size(1); got != st.want {
			t.Fatalf("step %d (%s %d): size %d, want %d", i, st.do, st.n, got, st.want)
		}
	}
	if s.size(2) != 16 {
		t.Error("clusters share a size")
	}
	if s := newSizer(0, 0); s.size(1) != 1 || newSizer(10, 5).size(1) != 10 {
		t.Error("bounds not normalised")
	}
}

// TestRecheckGuardCases: the re-check keeps a placement exactly when
// Cuebot's guards (and the folder cap) let its booking commit, on the same
// table match's TestGuardCases runs, so the two agree.
func TestRecheckGuardCases(t *testing.T) {
	t.Parallel()
	want := map[string]DropReason{"subscription": DropBurst, "job": DropJobCap, "folder": DropFolderCap}
	for _, gc := range matchtest.GuardCases() {
		t.Run(gc.Name, func(t *testing.T) {
			st, layer, host := recheckFixture()
			h := st.hosts["h"]
			h.idle.GPUs = 4
			st.hosts["h"] = h
			sa := showAlloc{"s", "a"}
			delete(st.subs, sa)
			if gc.SubFound {
				st.subs[sa] = subRow{cores: gc.Sub.Cores, burst: gc.Sub.Burst}
			}
			st.jobs["j"] = capRow{cores: gc.Job.Cores, maxCores: gc.Job.MaxCores, gpus: gc.Job.GPUs, maxGPUs: gc.Job.MaxGPUs}
			st.folders["f"] = capRow{cores: gc.Folder.Cores, maxCores: gc.Folder.MaxCores, gpus: gc.Folder.GPUs, maxGPUs: gc.Folder.MaxGPUs}
			p := match.Placement{Layer: layer, Frame: match.Frame{ID: "f1", Version: 3}, Host: host, Size: gc.Size}
			kept, drops := recheck([]match.Placement{p}, st, nil)
			if gc.Books {
				if len(kept) != 1 {
					t.Fatalf("rule %q: dropped %+v, want kept", gc.Rule, drops)
				}
				return
			}
			reason := want[gc.Refused]
			if !gc.SubFound {
				reason = DropNoSubscription
			}
			if len(drops) != 1 || drops[0].Reason != reason {
				t.Fatalf("rule %q: kept %d, drops %+v, want one %s drop", gc.Rule, len(kept), drops, reason)
			}
		})
	}
}
