package scheduler

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

const gb = 1048576

func demandLayer(id string, waiting, cores, mem int64, tags string) *match.Layer {
	return &match.Layer{ID: id, Facility: "local", Tags: cluster.SplitLayerTags(tags), Waiting: waiting,
		Min: match.Resources{Cores: cores, Mem: mem}}
}

// byTag renders demands as "tag=cores/memGB" sorted, for comparison.
func byTag(ds []match.TagDemand) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Facility+"/"+d.Tag+"="+strconv.FormatInt(d.Need.Cores, 10)+"/"+strconv.FormatInt(d.Need.Mem/gb, 10))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestDemandFromLayers(t *testing.T) {
	keyer := cluster.NewKeyer([]cluster.Alloc{{ID: "a1", Facility: "local", Tag: "general"}}, 4)
	tagged := func(facility, tag string) bool { return facility == "local" && tag != "nohost" }
	for _, tc := range []struct {
		name   string
		layers []*match.Layer
		want   string
	}{
		{"waiting frames times the minimums",
			[]*match.Layer{demandLayer("l", 5, 200, 4*gb, "pool1")}, "local/pool1=1000/20"},
		{"layers of one tag add up",
			[]*match.Layer{demandLayer("l", 5, 200, 4*gb, "pool1"), demandLayer("m", 1, 100, 2*gb, "POOL1")},
			"local/pool1=1100/22"},
		{"several tags share a layer's demand",
			[]*match.Layer{demandLayer("l", 4, 200, 4*gb, "pool1|pool2")}, "local/pool1=400/8 local/pool2=400/8"},
		{"an allocation tag takes its share and counts none",
			[]*match.Layer{demandLayer("l", 4, 200, 4*gb, "pool1 | general")}, "local/pool1=400/8"},
		{"a tag naming no host takes no share",
			[]*match.Layer{demandLayer("l", 4, 200, 4*gb, "pool1|nohost")}, "local/pool1=800/16"},
		{"a layer listed by two buckets counts once",
			[]*match.Layer{demandLayer("l", 4, 200, 4*gb, "pool1"), demandLayer("l", 4, 200, 4*gb, "pool1")},
			"local/pool1=800/16"},
		{"whole-host layers count their memory",
			[]*match.Layer{demandLayer("l", 2, 0, 4*gb, "pool1")}, "local/pool1=0/8"},
		{"no waiting frames, no demand",
			[]*match.Layer{demandLayer("l", 0, 200, 4*gb, "pool1")}, ""},
		{"only allocation tags, no demand",
			[]*match.Layer{demandLayer("l", 3, 200, 4*gb, "general")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDemand()
			d.recompute(tc.layers, keyer, tagged)
			if got := byTag(d.demands()); got != tc.want {
				t.Errorf("demand %q, want %q", got, tc.want)
			}
		})
	}
}

// Bookings lower the demand at once and stay off it until the queue reads
// the layer again (its Waiting then counts them).
func TestDemandFollowsBookings(t *testing.T) {
	keyer := cluster.NewKeyer(nil, 4)
	tagged := func(string, string) bool { return true }
	d := newDemand()
	l := demandLayer("l", 5, 100, gb, "pool1")
	other := demandLayer("o", 2, 100, gb, "pool2")
	d.recompute([]*match.Layer{l, other}, keyer, tagged)
	steps := []struct {
		name string
		do   func() bool // reports whether the demand changed, where that is known
		want string
	}{
		{"two frames booked", func() bool { return d.lower([]*match.Layer{l, l}) },
			"local/pool1=300/3 local/pool2=200/2"},
		{"the queue unchanged for the layer", func() bool {
			d.recompute([]*match.Layer{l, other}, keyer, tagged)
			return true
		}, "local/pool1=300/3 local/pool2=200/2"},
		{"a booking of a layer without demand", func() bool {
			return !d.lower([]*match.Layer{demandLayer("x", 1, 100, gb, "general")})
		}, "local/pool1=300/3 local/pool2=200/2"},
		{"the layer read again", func() bool {
			l = demandLayer("l", 3, 100, gb, "pool1")
			d.recompute([]*match.Layer{l, other}, keyer, tagged)
			return true
		}, "local/pool1=300/3 local/pool2=200/2"},
		{"a booking counted from a read the queue replaced", func() bool {
			return !d.lower([]*match.Layer{demandLayer("l", 5, 100, gb, "pool1")})
		}, "local/pool1=300/3 local/pool2=200/2"},
		{"every frame booked", func() bool { return d.lower([]*match.Layer{l, l, l, l}) },
			"local/pool2=200/2"},
		{"the layer drained", func() bool {
			d.recompute([]*match.Layer{other}, keyer, tagged)
			return len(d.booked) == 0
		}, "local/pool2=200/2"},
	}
	for _, st := range steps {
		if !st.do() {
			t.Fatalf("%s: the change was not reported as expected", st.name)
		}
		if got := byTag(d.demands()); got != st.want {
			t.Fatalf("%s: demand %q, want %q", st.name, got, st.want)
		}
	}
}

// Work queued in a tag bucket another instance owns makes its tags
// contested outright, whatever their supply; tags of the same layers that
// fall in other buckets are left to those buckets' owners.
func TestDemandForeignBuckets(t *testing.T) {
	keyer := cluster.NewKeyer([]cluster.Alloc{{ID: "a1", Facility: "local", Tag: "general"}}, 4)
	// Two tags in different buckets, so a layer carrying both belongs to two
	// clusters.
	t1, t2 := "pool1", ""
	for i := 2; t2 == ""; i++ {
		if c := "pool" + strconv.Itoa(i); keyer.OfTag("local", c) != keyer.OfTag("local", t1) {
			t2 = c
		}
	}
	l := demandLayer("l", 3, 100, gb, t1+"|"+t2)
	d := newDemand()
	d.addForeign(keyer, keyer.OfTag("local", t1), []*match.Layer{l})
	d.recompute([]*match.Layer{l}, keyer, func(string, string) bool { return true })
	got := map[string]int64{}
	foreign := map[string]bool{}
	for _, x := range d.demands() {
		got[x.Tag] += x.Need.Cores
		foreign[x.Tag] = foreign[x.Tag] || x.Foreign
	}
	if !foreign[t1] || foreign[t2] {
		t.Errorf("foreign %v, want only %s (foreign bucket) contested outright", foreign, t1)
	}
	if got[t1] != 150 || got[t2] != 150 {
		t.Errorf("needs %v cores, want each tag's share 150", got)
	}
	clear(d.foreign)
	for _, x := range d.demands() {
		if x.Foreign {
			t.Errorf("%s still contested outright once no bucket is foreign", x.Tag)
		}
	}
}
