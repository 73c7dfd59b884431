package cache

import (
	"testing"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// A host set without the stream is offered as the replica offers one:
// walked by its tags with the smaller of its idle and free memory, out of
// the index below Cuebot's minimums, and reported grown when it comes back.
func TestSetHost(t *testing.T) {
	t.Parallel()
	h := NewHosts(nil, 0)
	h.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	total := match.Resources{Cores: 800, Mem: 32 << 20}
	host := match.Host{ID: "h1", Name: "h1", Facility: "local", Alloc: "a1", OS: "linux",
		Tags: []string{"general", "Pool1"}, Total: total, Idle: total, MemFree: 16 << 20,
		TempFree: 1 << 20, TempTotal: 1 << 20}
	if !h.SetHost(host) {
		t.Error("a new host offered: want grown")
	}
	walked := func(tag string) []match.Host {
		var out []match.Host
		h.Walk("local", tag, match.Resources{Cores: 100}, nil, func(x match.Host) bool { out = append(out, x); return true })
		return out
	}
	got := walked("pool1")
	if len(got) != 1 || got[0].Idle.Cores != 800 || got[0].Idle.Mem != 16<<20 {
		t.Fatalf("walk of pool1: %+v, want h1 with 8 cores and its 16 GB free", got)
	}
	host.Idle.Cores = 5 // below Cuebot's minimum of idle cores
	if h.SetHost(host) || len(walked("general")) != 0 {
		t.Fatal("a host below the minimums is offered, or reported grown")
	}
	host.Idle.Cores = 400
	if !h.SetHost(host) || len(walked("general")) != 1 {
		t.Fatal("a host back above the minimums is not offered, or not reported grown")
	}
}
