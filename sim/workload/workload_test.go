package workload

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const farm = `about a test farm
hosts 6 cores=16,32 mem=32G,64G,128G alloc=a,b tags=p1,p2|p3
sub s a size=10 burst=20
job j show=s count=4 every=1m poisson priority=1-9
layer sim job=j frames=2-5 cores=1,2 mem=2G,4G used=0.5-1.5 runtime=10m spread=0.5 tags=a,b threadable
layer render job=j after=sim tags=a
`

// Hosts cycle each list by their index; the same seed draws the same
// farm, another seed another; layers keep their template's shape.
func TestDraw(t *testing.T) {
	t.Parallel()
	w, err := Parse("farm.sim", []byte(farm))
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Draw(7, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Hosts) != 6 || len(f.Allocs) != 2 || len(f.Jobs) != 4 {
		t.Fatalf("%d hosts, %d allocs, %d jobs; want 6, 2, 4", len(f.Hosts), len(f.Allocs), len(f.Jobs))
	}
	h := f.Hosts[5]
	if h.Cores != 3200 || h.Mem != 128*GB || h.Alloc != "b" || !reflect.DeepEqual(h.Tags, []string{"b", "host00005", "p2", "p3"}) {
		t.Errorf("host 5: %+v; want 32 cores, 128 GB, alloc b, tags b host00005 p2 p3", h)
	}
	for _, j := range f.Jobs {
		if j.Priority < 1 || j.Priority > 9 || j.Layers[1].After != 0 || len(j.Layers[0].Frames) < 2 ||
			len(j.Layers[0].Frames) > 5 {
			t.Errorf("job %s: %+v", j.ID, j)
		}
		for _, fr := range j.Layers[0].Frames {
			if fr.Used < j.Layers[0].Mem/2 || fr.Used > j.Layers[0].Mem*3/2 || fr.Runtime < time.Second {
				t.Errorf("job %s: frame %+v out of its ranges", j.ID, fr)
			}
		}
	}
	again, _ := w.Draw(7, 0, 0)
	if !reflect.DeepEqual(f, again) {
		t.Error("seed 7 drew two farms")
	}
	other, _ := w.Draw(8, 0, 0)
	if reflect.DeepEqual(f, other) {
		t.Error("seeds 7 and 8 drew the same farm")
	}
	small, err := w.Draw(7, 0.5, 0.25)
	if err != nil || len(small.Hosts) != 3 || len(small.Jobs) != 1 || small.Subs[0].Size != 500 {
		t.Errorf("at half the hosts and a quarter of the jobs: %v, %d hosts, %d jobs, subs %+v", err, len(small.Hosts),
			len(small.Jobs), small.Subs)
	}
}

// Bad input is refused naming file:line and what is wanted.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	base := "hosts 2\nsub s general size=4\njob j show=s\n"
	for _, tc := range []struct{ src, want string }{
		{base + "layer l job=j cores=x\n", "x.sim:4: cores=x: want whole cores"},
		{base + "layer l job=k\n", `x.sim:4: layer l: job="k" is not a job declared above`},
		{base + "layer l job=j after=m\n", `x.sim:4: layer l: after="m" is not a layer of job j`},
		{base + "layer l job=j frames=5-2\n", "x.sim:4: frames=5-2: want N or A-B"},
		{base + "layer l job=j colour=red\n", `x.sim:4: unknown key "colour"`},
		{base + "layer l job=j runtime=60m-30m\n", "x.sim:4: runtime=60m-30m: want a range of durations A-B with B at least A"},
		{base + "layer l job=j runtime=soon\n", "x.sim:4: runtime=soon: want a duration such as 90s, 10m or 2h, or a range"},
		{base + "frobnicate\n", `x.sim:4: unknown directive "frobnicate"`},
		{"hosts 2\nsub s other size=4\njob j show=s\nlayer l job=j\n", "x.sim:2: sub s other: no host is in allocation other"},
		{"hosts 2\nsub s general size=4\njob j show=t\nlayer l job=j\n", "x.sim:3: job j: show t has no sub line"},
		{base, "x.sim:3: job j has no layer"},
	} {
		_, err := Parse("x.sim", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.src, err, tc.want)
		}
	}
}

// runtime=A-B draws each frame's time uniformly from the range.
func TestRuntimeRange(t *testing.T) {
	t.Parallel()
	w, err := Parse("x.sim", []byte("hosts 2\nsub s general size=4\njob j show=s\nlayer l job=j frames=200 runtime=30m-60m\n"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Draw(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := time.Hour, time.Duration(0)
	for _, fr := range f.Jobs[0].Layers[0].Frames {
		lo, hi = min(lo, fr.Runtime), max(hi, fr.Runtime)
	}
	if lo < 30*time.Minute || hi > time.Hour || hi-lo < 25*time.Minute {
		t.Errorf("runtimes from %v to %v: want spread over 30m-60m", lo, hi)
	}
}

// Every committed scenario parses, and says what it models.
func TestCommitted(t *testing.T) {
	t.Parallel()
	all, err := List()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		if w.About == "" {
			t.Errorf("%s has no about line", w.Name)
		}
		if _, err := Load(w.Name); err != nil {
			t.Errorf("Load(%s): %v", w.Name, err)
		}
	}
}
