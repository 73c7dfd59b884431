package cluster

import (
	"reflect"
	"testing"
)

func TestSplitLayerTags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"general", []string{"general"}},
		{" General | Desktop|util ", []string{"general", "desktop", "util"}},
		{"a||A| ", []string{"a"}},
		{"", nil},
		{"gen eral|  GEN\tERAL ", []string{"general"}}, // Cuebot's expanded regex ignores whitespace
	} {
		if got := SplitLayerTags(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitLayerTags(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// Bucket values are part of the deployment's state (instances must agree,
// across releases): pin a few so a change of hash is caught.
func TestBucketIsStable(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		n    int
		want int
	}{
		{"pool1", 16, Bucket("POOL1 ", 16)},
		{"gpu", 1, 0},
		{"gpu", 0, 0},
	} {
		if got := Bucket(tc.tag, tc.n); got != tc.want {
			t.Errorf("Bucket(%q, %d) = %d, want %d", tc.tag, tc.n, got, tc.want)
		}
	}
	// Values computed independently of this code (FNV-1a 32, mod 16).
	pinned := map[string]int{"pool1": 6, "pool2": 3, "desktop": 3, "127.10.0.1": 13}
	for tag, want := range pinned {
		if got := Bucket(tag, 16); got != want {
			t.Errorf("Bucket(%q, 16) = %d, want %d (the hash must never change)", tag, got, want)
		}
	}
}

func TestKeyerFacilityScopesAllocTags(t *testing.T) {
	k := NewKeyer([]Alloc{
		{ID: "lg", Facility: "local", Tag: "general"},
		{ID: "cg", Facility: "cloud", Tag: "General"},
		{ID: "ld", Facility: "local", Tag: "desktop"},
	}, 16)
	if got := k.OfTag("cloud", "general"); got != (Key{Kind: KindAlloc, Facility: "cloud", Alloc: "cg"}) {
		t.Errorf("cloud general -> %v", got)
	}
	if got := k.OfTag("local", " GENERAL"); got != (Key{Kind: KindAlloc, Facility: "local", Alloc: "lg"}) {
		t.Errorf("local general -> %v", got)
	}
	// desktop is an allocation tag in local only: in cloud it is a plain tag.
	if got := k.OfTag("cloud", "desktop"); got.Kind != KindTags || got.Bucket != Bucket("desktop", 16) {
		t.Errorf("cloud desktop -> %v", got)
	}
	layer := k.OfLayer("local", []string{"pool1", "general", "pool1", "desktop"})
	want := []Key{
		{Kind: KindAlloc, Facility: "local", Alloc: "ld"},
		{Kind: KindAlloc, Facility: "local", Alloc: "lg"},
		{Kind: KindTags, Facility: "local", Bucket: Bucket("pool1", 16)},
	}
	if !reflect.DeepEqual(layer, want) {
		t.Errorf("OfLayer = %v, want %v", layer, want)
	}
	host := k.OfHost("local", "lg", []string{"general", "pool1", "127.10.0.1"})
	if len(host) < 2 || host[0] != (Key{Kind: KindAlloc, Facility: "local", Alloc: "lg"}) {
		t.Errorf("OfHost = %v", host)
	}
	for _, h := range host[1:] {
		if h.Kind != KindTags {
			t.Errorf("OfHost gave a second allocation cluster: %v", host)
		}
	}
}

func TestKeyStrings(t *testing.T) {
	if s := (Key{Kind: KindAlloc, Facility: "f", Alloc: "a"}).String(); s != "alloc/a" {
		t.Errorf("alloc key %q", s)
	}
	if s := (Key{Kind: KindTags, Facility: "f", Bucket: 7}).String(); s != "tags/f/7" {
		t.Errorf("tags key %q", s)
	}
}

func FuzzBucketInRange(f *testing.F) {
	f.Add("pool1", 16)
	f.Add("", 1)
	f.Fuzz(func(t *testing.T, tag string, n int) {
		if n > 1<<20 || n < -5 {
			return
		}
		b := Bucket(tag, n)
		if b < 0 || (n > 1 && b >= n) || (n <= 1 && b != 0) {
			t.Fatalf("Bucket(%q, %d) = %d", tag, n, b)
		}
		if Bucket(tag, n) != b {
			t.Fatal("not deterministic")
		}
	})
}
