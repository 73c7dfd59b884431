package match_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

const gb = 1048576

func testHost(id, alloc string, cores int64, tags ...string) match.Host {
	r := match.Resources{Cores: cores * 100, Mem: 64 * gb}
	return match.Host{
		ID: id, Name: id, Facility: "local", Alloc: alloc, OS: "linux",
		Tags:  append([]string{alloc, id}, tags...),
		Total: r, Idle: r, MemFree: 64 * gb, TempFree: 10 * gb, TempTotal: 10 * gb,
	}
}

func testLayer(id, show string, frames int, tags ...string) *match.Layer {
	l := &match.Layer{
		ID: id, JobID: "job-" + id, ShowID: show, FolderID: "folder-" + show, Facility: "local",
		Priority: 1, Tags: tags, Min: match.Resources{Cores: 100, Mem: gb},
	}
	for i := range frames {
		l.Frames = append(l.Frames, match.Frame{ID: fmt.Sprintf("%s/%d", id, i)})
	}
	return l
}

func capsWith(subs map[matchtest.SubKey]match.Subscription) *matchtest.Caps {
	c := matchtest.NewCaps()
	for k, s := range subs {
		c.Subs[k] = s
	}
	return c
}

// racingHosts loses the first Take of one host to a "concurrent round" that
// takes the host's whole idle capacity just before.
type racingHosts struct {
	*matchtest.Hosts
	victim string
	once   sync.Once
}

func (r *racingHosts) Take(id string, res match.Resources) bool {
	lost := false
	if id == r.victim {
		r.once.Do(func() {
			h, _ := r.Host(id)
			r.Hosts.Take(id, h.Idle)
			lost = true
		})
	}
	if lost {
		return false
	}
	return r.Hosts.Take(id, res)
}

func TestPlanTakeLostTriesNextHost(t *testing.T) {
	hosts := &racingHosts{Hosts: matchtest.NewHosts([]match.Host{
		testHost("h1", "general", 8), testHost("h2", "general", 16),
	}), victim: "h1"}
	caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 1000, Burst: 1000}})
	res := match.Plan([]*match.Layer{testLayer("l", "s", 1, "general")}, hosts, caps, match.Options{})
	if len(res.Placements) != 1 || res.Placements[0].Host.ID != "h2" || len(res.Waits) != 0 {
		t.Fatalf("placements %+v waits %+v, want one on h2", res.Placements, res.Waits)
	}
}

// Two rounds planning at once on the same hosts never hand out the same
// capacity: Take is the arbiter.
func TestPlanConcurrentRoundsShareNoCapacity(t *testing.T) {
	var hs []match.Host
	for i := range 20 {
		hs = append(hs, testHost(fmt.Sprintf("h%02d", i), "general", 8))
	}
	hosts := matchtest.NewHosts(hs)
	caps := capsWith(map[matchtest.SubKey]match.Subscription{
		{Show: "a", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30},
		{Show: "b", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30},
	})
	results := make([]match.Result, 2)
	var wg sync.WaitGroup
	for i, show := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = match.Plan([]*match.Layer{testLayer("l"+show, show, 200, "general")}, hosts, caps, match.Options{Seed: int64(i)})
		}()
	}
	wg.Wait()
	used := map[string]int64{}
	total := 0
	for _, r := range results {
		for _, p := range r.Placements {
			used[p.Host.ID] += p.Size.Cores
			total++
		}
	}
	for id, c := range used {
		if c > 800 {
			t.Errorf("host %s given %d core units of 800", id, c)
		}
	}
	if total != 160 {
		t.Errorf("%d placements, want the farm's 160 cores filled", total)
	}
}

func TestPlanTagFilter(t *testing.T) {
	hosts := matchtest.NewHosts([]match.Host{testHost("ha", "a", 4), testHost("hb", "b", 4)})
	caps := capsWith(map[matchtest.SubKey]match.Subscription{
		{Show: "s", Alloc: "a"}: {Size: 1000, Burst: 1000},
		{Show: "s", Alloc: "b"}: {Size: 1000, Burst: 1000},
	})
	onlyB := func(facility, tag string) bool { return facility == "local" && tag == "b" }
	res := match.Plan([]*match.Layer{testLayer("l", "s", 2, "a", "b")}, hosts, caps, match.Options{TagFilter: onlyB})
	for _, p := range res.Placements {
		if p.Host.ID != "hb" {
			t.Errorf("placed on %s outside the filter", p.Host.ID)
		}
	}
	if len(res.Placements) != 2 {
		t.Errorf("%d placements, want 2", len(res.Placements))
	}
	none := func(string, string) bool { return false }
	res = match.Plan([]*match.Layer{testLayer("l2", "s", 2, "a")}, hosts, caps, match.Options{TagFilter: none})
	if len(res.Waits) != 1 || res.Waits[0].Reason != match.ReasonNoHost {
		t.Errorf("waits %+v, want one no-host", res.Waits)
	}
}

func TestPlanDeterministicAndPure(t *testing.T) {
	build := func() ([]*match.Layer, *matchtest.Hosts, *matchtest.Caps) {
		var hs []match.Host
		for i := range 10 {
			hs = append(hs, testHost(fmt.Sprintf("h%d", i), "general", int64(4+4*(i%3))))
		}
		var ls []*match.Layer
		for i := range 12 {
			l := testLayer(fmt.Sprintf("l%d", i), fmt.Sprintf("s%d", i%3), 10, "general")
			l.Priority = int64(1 + 10*i)
			ls = append(ls, l)
		}
		caps := matchtest.NewCaps()
		for i := range 3 {
			caps.Subs[matchtest.SubKey{Show: fmt.Sprintf("s%d", i), Alloc: "general"}] = match.Subscription{Size: 2000, Burst: 5000}
		}
		return ls, matchtest.NewHosts(hs), caps
	}
	summary := func(r match.Result) []string {
		var s []string
		for _, p := range r.Placements {
			s = append(s, p.Layer.ID+"@"+p.Host.ID+"/"+p.Frame.ID)
		}
		for _, w := range r.Waits {
			s = append(s, string(w.Reason)+":"+w.Layer.ID+":"+w.Detail)
		}
		return s
	}
	ls, hosts, caps := build()
	before := fmt.Sprint(ls[0].Frames)
	opt := match.Options{Seed: 42, Allocs: []string{"general"}}
	a := summary(match.Plan(ls, hosts, caps, opt))
	if fmt.Sprint(ls[0].Frames) != before {
		t.Error("Plan changed a layer's frames")
	}
	ls, hosts, caps = build()
	b := summary(match.Plan(ls, hosts, caps, opt))
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different rounds:\n%v\n%v", a, b)
	}
}

// The lowest subscription tier draws first: with one placement allowed, it
// goes to the show furthest below its share.
func TestPlanLowestTierDrawsFirst(t *testing.T) {
	hosts := matchtest.NewHosts([]match.Host{testHost("h", "general", 16)})
	caps := capsWith(map[matchtest.SubKey]match.Subscription{
		{Show: "rich", Alloc: "general"}: {Size: 1000, Burst: 10000, Cores: 900}, // tier 0.9
		{Show: "poor", Alloc: "general"}: {Size: 1000, Burst: 10000, Cores: 100}, // tier 0.1
	})
	layers := []*match.Layer{testLayer("r", "rich", 20, "general"), testLayer("p", "poor", 20, "general")}
	res := match.Plan(layers, hosts, caps, match.Options{MaxPlacements: 1, Allocs: []string{"general"}})
	if len(res.Placements) != 1 || res.Placements[0].Layer.ID != "p" {
		t.Fatalf("placements %+v, want the poor show first", res.Placements)
	}
	// With ten: poor rises from 0.1 in steps of 0.1 and reaches rich's 0.9
	// after 8. At equal tiers the show with fewer cores in use draws; both
	// have 900, so the id decides ("poor" < "rich"): poor's 9th takes it to
	// 1.0, and the 10th goes to rich at 0.9.
	res = match.Plan(layers, matchtest.NewHosts([]match.Host{testHost("h", "general", 16)}), caps, match.Options{MaxPlacements: 10, Allocs: []string{"general"}})
	n := map[string]int{}
	for _, p := range res.Placements {
		n[p.Layer.ID]++
	}
	if n["p"] != 9 || n["r"] != 1 {
		t.Errorf("placements by layer %v, want p 9 and r 1", n)
	}
}

// countingHosts counts walks.
type countingHosts struct {
	*matchtest.Hosts
	walks int
}

func (c *countingHosts) Walk(f, t string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) {
	c.walks++
	c.Hosts.Walk(f, t, min, claim, visit)
}

func (c *countingHosts) WalkUncontested(f, t string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) bool {
	c.walks++
	return c.Hosts.WalkUncontested(f, t, min, claim, visit)
}

// Layers of a shape that failed do not walk again.
func TestPlanMemoisesFailedShapes(t *testing.T) {
	hosts := &countingHosts{Hosts: matchtest.NewHosts([]match.Host{testHost("h", "general", 4)})}
	caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30}})
	var layers []*match.Layer
	for i := range 100 {
		l := testLayer(fmt.Sprintf("l%d", i), "s", 10, "general")
		l.Min.Cores = 800 // never fits a 4-core host
		layers = append(layers, l)
	}
	res := match.Plan(layers, hosts, caps, match.Options{})
	if len(res.Waits) != 100 {
		t.Fatalf("%d waits, want 100", len(res.Waits))
	}
	for _, w := range res.Waits {
		if w.Reason != match.ReasonNoFit {
			t.Fatalf("wait %s %s, want no-fit", w.Reason, w.Detail)
		}
	}
	if hosts.walks > 2 {
		t.Errorf("%d walks for 100 layers of one shape, want one search and one diagnosis", hosts.walks)
	}
}

func TestPlanWithoutAllocsBalancesShows(t *testing.T) {
	hosts := matchtest.NewHosts([]match.Host{testHost("h", "general", 16)})
	caps := capsWith(map[matchtest.SubKey]match.Subscription{
		{Show: "a", Alloc: "general"}: {Size: 100, Burst: 10000},
		{Show: "b", Alloc: "general"}: {Size: 100, Burst: 10000},
	})
	res := match.Plan([]*match.Layer{testLayer("la", "a", 50, "general"), testLayer("lb", "b", 50, "general")}, hosts, caps, match.Options{})
	n := map[string]int{}
	for _, p := range res.Placements {
		n[p.Layer.ShowID]++
	}
	if n["a"] != 8 || n["b"] != 8 {
		t.Errorf("placements by show %v, want 8 each", n)
	}
}

// Priority is a rate: a layer of priority 300 is drawn about three times as
// often as one of 100 (the floor, 400/20 = 20 tickets, changes neither).
func TestPlanLotteryPriorityIsARate(t *testing.T) {
	var hs []match.Host
	for i := range 40 {
		hs = append(hs, testHost(fmt.Sprintf("h%02d", i), "general", 100))
	}
	caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30}})
	a, b := testLayer("a", "s", 4000, "general"), testLayer("b", "s", 4000, "general")
	a.Priority, b.Priority = 100, 300
	a.Min.Mem, b.Min.Mem = gb/4, gb/4 // cores, not memory, fill the hosts
	res := match.Plan([]*match.Layer{a, b}, matchtest.NewHosts(hs), caps, match.Options{Seed: 3})
	n := map[string]int{}
	for _, p := range res.Placements {
		n[p.Layer.ID]++
	}
	// 4000 draws, p(a) = 1/4: mean 1000, standard deviation 27.
	if len(res.Placements) != 4000 || n["a"] < 900 || n["a"] > 1100 {
		t.Errorf("placements by layer %v of %d, want a near 1000 of 4000", n, len(res.Placements))
	}
}

func TestPlanLayerWithoutTags(t *testing.T) {
	hosts := matchtest.NewHosts([]match.Host{testHost("h", "general", 4)})
	res := match.Plan([]*match.Layer{testLayer("l", "s", 1)}, hosts, matchtest.NewCaps(), match.Options{})
	if len(res.Waits) != 1 || res.Waits[0].Reason != match.ReasonNoHost || res.Waits[0].Detail != "the layer has no tags" {
		t.Errorf("waits %+v, want no-host for a layer without tags", res.Waits)
	}
}

// Tag pressure: a host carrying a contested tag other than the one walked is
// left out while another host fits, whatever the policy, and used when none
// does; GPU hosts stay the last resort.
func TestPlanTagPressure(t *testing.T) {
	gpu := func(h match.Host) match.Host {
		h.Total.GPUs, h.Idle.GPUs = 2, 2
		return h
	}
	for _, tc := range []struct {
		name      string
		hosts     []match.Host
		contested []string
		tags      []string
		cores     int64 // per frame, whole cores
		policy    match.Policy
		want      string
	}{
		{name: "an uncontested host before a tighter contested one",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), testHost("big", "general", 16)},
			contested: []string{"pool1"}, tags: []string{"general"}, cores: 1, want: "big"},
		{name: "the same under E-PVM",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), testHost("big", "general", 16)},
			contested: []string{"pool1"}, tags: []string{"general"}, cores: 1, policy: match.NewEPVM(0, 0), want: "big"},
		{name: "without pressure best fit takes the tighter host",
			hosts: []match.Host{testHost("small", "general", 4, "pool1"), testHost("big", "general", 16)},
			tags:  []string{"general"}, cores: 1, want: "small"},
		{name: "a contested host when only it fits",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), testHost("tiny", "general", 2)},
			contested: []string{"pool1"}, tags: []string{"general"}, cores: 3, want: "small"},
		{name: "a layer of the contested tag is not held back by it",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), testHost("big", "general", 16, "pool1")},
			contested: []string{"pool1"}, tags: []string{"pool1"}, cores: 1, want: "small"},
		{name: "a layer of a contested tag avoids hosts kept for another",
			hosts:     []match.Host{testHost("both", "general", 4, "pool1", "pool2"), testHost("one", "general", 16, "pool1")},
			contested: []string{"pool1", "pool2"}, tags: []string{"pool1"}, cores: 1, want: "one"},
		{name: "every tag of the layer is walked without contested hosts first",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), testHost("other", "render", 16)},
			contested: []string{"pool1"}, tags: []string{"general", "render"}, cores: 1, want: "other"},
		{name: "a contested host before a GPU host",
			hosts:     []match.Host{testHost("small", "general", 4, "pool1"), gpu(testHost("gpu", "general", 16))},
			contested: []string{"pool1"}, tags: []string{"general"}, cores: 1, want: "small"},
		{name: "an uncontested GPU host before a tighter contested one",
			hosts:     []match.Host{gpu(testHost("gsmall", "general", 4, "pool1")), gpu(testHost("gbig", "general", 16))},
			contested: []string{"pool1"}, tags: []string{"general"}, cores: 1, want: "gbig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := matchtest.NewHosts(tc.hosts)
			for _, tag := range tc.contested {
				hosts.SetContested("local", tag, true)
			}
			caps := capsWith(map[matchtest.SubKey]match.Subscription{
				{Show: "s", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30},
				{Show: "s", Alloc: "render"}:  {Size: 1 << 30, Burst: 1 << 30},
			})
			l := testLayer("l", "s", 1, tc.tags...)
			l.Min.Cores = tc.cores * 100
			res := match.Plan([]*match.Layer{l}, hosts, caps, match.Options{Policy: tc.policy})
			if len(res.Placements) != 1 {
				t.Fatalf("%d placements, waits %+v", len(res.Placements), res.Waits)
			}
			if got := res.Placements[0].Host.ID; got != tc.want {
				t.Errorf("placed on %s, want %s", got, tc.want)
			}
		})
	}
}

// The walks without contested hosts are repeated with them only when they
// left a host out and found nothing.
func TestPlanWalksAgainOnlyWhenHostsWereLeftOut(t *testing.T) {
	for _, tc := range []struct {
		name      string
		contested bool
		fits      bool
		walks     int
	}{
		{"nothing contested, a host fits", false, true, 1},
		{"nothing contested, nothing fits", false, false, 2}, // the search, then the diagnosis
		{"the only host contested, it fits", true, true, 2},
		{"the only host contested, nothing fits", true, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := &countingHosts{Hosts: matchtest.NewHosts([]match.Host{testHost("h", "general", 4, "pool1")})}
			hosts.SetContested("local", "pool1", tc.contested)
			caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 1 << 30, Burst: 1 << 30}})
			l := testLayer("l", "s", 1, "general")
			if !tc.fits {
				l.OS = "windows" // the index offers the host, the rules refuse it
			}
			res := match.Plan([]*match.Layer{l}, hosts, caps, match.Options{})
			if (len(res.Placements) == 1) != tc.fits || hosts.walks != tc.walks {
				t.Errorf("%d placements after %d walks, want %v and %d walks", len(res.Placements), hosts.walks, tc.fits, tc.walks)
			}
		})
	}
}
