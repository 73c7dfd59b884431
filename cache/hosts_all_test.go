package cache

import (
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// AllHosts visits every host of a tag, a busy one too (the index walks
// only hosts with room), in id order.
func TestAllHosts(t *testing.T) {
	h := NewHosts(func() time.Time { return epoch }, 0)
	h.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
	r := match.Resources{Cores: 1600, Mem: 64 * gb}
	for _, x := range []struct {
		id   string
		tags []string
		idle match.Resources
	}{{"h3", []string{"general"}, r}, {"h1", []string{"general"}, match.Resources{}}, {"h2", []string{"pool"}, r}} {
		h.SetHost(match.Host{ID: x.id, Name: x.id, Facility: "local", Alloc: "a1", OS: "linux", Tags: x.tags,
			Total: r, Idle: x.idle, MemFree: r.Mem, TempFree: gb, TempTotal: gb})
	}
	var all, walked []string
	h.AllHosts("local", "general", func(x match.Host) bool { all = append(all, x.ID); return true })
	h.Walk("local", "general", match.Resources{}, nil, func(x match.Host) bool { walked = append(walked, x.ID); return true })
	if !slices.Equal(all, []string{"h1", "h3"}) || !slices.Equal(walked, []string{"h3"}) {
		t.Errorf("all hosts of general %v (walked %v), want h1 (busy) and h3", all, walked)
	}
}
