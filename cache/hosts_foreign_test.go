package cache

import (
	"fmt"
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
	// With every host contested and no tag pressured, the walk of the
	// allocation's tag keeps first to the hosts of its side of the split.
	var allocSide []string
	for _, id := range []string{"small", "big"} {
		if !tagSide(id) {
			allocSide = append(allocSide, id)
		}
	}
	neither, neitherSkipped := allocSide, len(allocSide) < 2
	if len(allocSide) == 0 {
		neither = []string{"small", "big"}
	}
	walk := func() ([]string, bool) {
		var ids []string
		skipped := f.r.hosts.WalkUncontested("local", "general", match.Resources{Cores: 100, Mem: gb}, nil,
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
			neither, neitherSkipped},
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

// TestWalkUncontestedSplitsHostsEveryInstanceContests: when an allocation
// cluster and a tag bucket that share every host are worked by two
// instances, each instance sees every host contested (its tag foreign). The
// walks of the allocation's tag and of the manual tag then keep first to
// opposite sides of one split of the hosts, which every instance computes
// alike, so the two instances do not place onto the same best fit and race
// for it (before, both walked every host in the same order). A side with no
// room left sends the walk on to the other side: nothing waits while a host
// fits.
func TestWalkUncontestedSplitsHostsEveryInstanceContests(t *testing.T) {
	// Two replicas of the same hosts: the allocation's instance, to which
	// the manual tag's work is foreign, and the tag bucket's, to which the
	// allocation's work is.
	allocView, tagView := newFake(nil, 0), newFake(nil, 0)
	var ids []string
	for _, f := range []*fake{allocView, tagView} {
		f.allocs(t)
		for i := range 12 {
			id := fmt.Sprintf("h%02d", i)
			m := baseHost(id, "a1")
			m.tags[id+"-a"] = "general"
			m.tags[id+"-m"] = "pool"
			f.addHost(t, m)
			if f == allocView {
				ids = append(ids, id)
			}
		}
	}
	allocView.r.hosts.SetDemand([]match.TagDemand{{Facility: "local", Tag: "pool", Foreign: true}})
	tagView.r.hosts.SetDemand([]match.TagDemand{{Facility: "local", Tag: "general", Foreign: true}})
	min := match.Resources{Cores: 100, Mem: gb}
	walk := func(f *fake, tag string) ([]string, bool) {
		var got []string
		skipped := f.r.hosts.WalkUncontested("local", tag, min, nil, func(h match.Host) bool { got = append(got, h.ID); return true })
		return got, skipped
	}
	alloc, allocSkipped := walk(allocView, "general")
	tag, tagSkipped := walk(tagView, "pool")
	if !allocSkipped || !tagSkipped {
		t.Fatalf("walks left out hosts: allocation's %v, tag's %v; want both (the other side's)", allocSkipped, tagSkipped)
	}
	if len(alloc) == 0 || len(tag) == 0 {
		t.Fatalf("allocation walk %v, tag walk %v: want hosts on both sides", alloc, tag)
	}
	both := append(slices.Clone(alloc), tag...)
	slices.Sort(both)
	if !slices.Equal(both, ids) {
		t.Fatalf("allocation walk %v, tag walk %v: want each host on exactly one side", alloc, tag)
	}
	// The allocation's side full: its walk goes on to the tag side.
	for _, id := range alloc {
		if !allocView.r.hosts.Take(id, match.Resources{Cores: 1600}) {
			t.Fatalf("take %s", id)
		}
	}
	if got, _ := walk(allocView, "general"); !slices.Equal(got, tag) {
		t.Fatalf("allocation walk with its side full %v, want the tag side %v", got, tag)
	}
}
