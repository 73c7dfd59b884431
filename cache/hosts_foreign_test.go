package cache

import (
	"slices"
	"testing"

	"github.com/cuesched/cuesched/match"
)

// TestWalkUncontestedWhenEveryHostIsForeign: when every host a walk meets
// carries a contested tag, because another instance works each of their
// tags (foreign), the walk still leaves out the hosts of a tag whose own
// need reaches the pressure fraction, so work that can go elsewhere does
// not fill them while that tag's work waits (the smallest hosts, which best
// fit prefers, carrying one manual tag on the peer stress farm).
func TestWalkUncontestedWhenEveryHostIsForeign(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	for _, h := range []struct {
		id, pool string
		cores    int64
	}{{"small", "pool1", 1600}, {"big", "pool2", 6400}} {
		m := baseHost(h.id, "a1")
		m.cores, m.coresIdle = h.cores, h.cores
		m.tags[h.id+"-a"] = "general"
		m.tags[h.id+"-m"] = h.pool
		f.addHost(t, m)
	}
	walk := func() ([]string, bool) {
		var ids []string
		skipped := f.r.hosts.WalkUncontested("local", "general", match.Resources{Cores: 100, Mem: gb},
			func(h match.Host) bool { ids = append(ids, h.ID); return true })
		return ids, skipped
	}
	for _, tc := range []struct {
		name    string
		demand  []match.TagDemand
		want    []string
		skipped bool
	}{
		{"no pressure", nil, []string{"small", "big"}, false},
		{"pool1 pressured", []match.TagDemand{{Facility: "local", Tag: "pool1", Need: match.Resources{Cores: 1600}}},
			[]string{"big"}, true},
		{"both foreign, pool1's need reaching the fraction", []match.TagDemand{
			{Facility: "local", Tag: "pool1", Need: match.Resources{Cores: 1600}, Foreign: true},
			{Facility: "local", Tag: "pool2", Need: match.Resources{Cores: 100}, Foreign: true}},
			[]string{"big"}, true},
		{"both foreign, pool1's need reaching the fraction over foreignStrain", []match.TagDemand{
			{Facility: "local", Tag: "pool1", Need: match.Resources{Cores: 1600 * DefaultPressureFraction / foreignStrain}, Foreign: true},
			{Facility: "local", Tag: "pool2", Foreign: true}},
			[]string{"big"}, true},
		{"both foreign, neither's need reaching it", []match.TagDemand{
			{Facility: "local", Tag: "pool1", Need: match.Resources{Cores: 150}, Foreign: true},
			{Facility: "local", Tag: "pool2", Foreign: true}},
			[]string{"small", "big"}, false},
		{"one foreign", []match.TagDemand{{Facility: "local", Tag: "pool2", Foreign: true}},
			[]string{"small"}, true},
	} {
		f.r.hosts.SetDemand(tc.demand)
		checkLevels(t, f.r.hosts)
		if got, skipped := walk(); !slices.Equal(got, tc.want) || skipped != tc.skipped {
			t.Errorf("%s: WalkUncontested = %v, %v; want %v, %v", tc.name, got, skipped, tc.want, tc.skipped)
		}
	}
}
