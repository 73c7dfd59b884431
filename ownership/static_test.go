package ownership

import (
	"testing"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/config"
)

func TestRestrictionCovers(t *testing.T) {
	lg := clusterInfo{Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "L", Alloc: "lg"}, AllocTag: "General"}
	cg := clusterInfo{Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "C", Alloc: "cg"}, AllocTag: "general"}
	ld := clusterInfo{Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "L", Alloc: "ld"}, AllocTag: "desktop"}
	pool1 := clusterInfo{Key: cluster.Key{Kind: cluster.KindTags, Facility: "L", Bucket: cluster.Bucket("pool1", 16)}}
	other := clusterInfo{Key: cluster.Key{Kind: cluster.KindTags, Facility: "L", Bucket: (cluster.Bucket("pool1", 16) + 1) % 16}}
	for _, tc := range []struct {
		name   string
		static Static
		fac    string
		want   map[string]bool // by cluster key
	}{
		{"unrestricted", Static{}, "", map[string]bool{"lg": true, "cg": true, "ld": true, "pool1": true, "other": true}},
		{"facility only", Static{Facility: "local"}, "L", map[string]bool{"lg": true, "cg": false, "ld": true, "pool1": true, "other": true}},
		{"alloc tags", Static{AllocTags: []config.AllocTag{{Show: "a", Tag: " GENERAL"}}}, "",
			map[string]bool{"lg": true, "cg": true, "ld": false, "pool1": false, "other": false}},
		{"alloc tags in a facility", Static{Facility: "local", AllocTags: []config.AllocTag{{Show: "a", Tag: "general"}}}, "L",
			map[string]bool{"lg": true, "cg": false, "ld": false, "pool1": false, "other": false}},
		{"manual tags", Static{ManualTags: []string{"Pool1"}}, "",
			map[string]bool{"lg": false, "cg": false, "ld": false, "pool1": true, "other": false}},
	} {
		r := tc.static.resolve(tc.fac)
		for name, c := range map[string]clusterInfo{"lg": lg, "cg": cg, "ld": ld, "pool1": pool1, "other": other} {
			if got := r.covers(c, 16); got != tc.want[name] {
				t.Errorf("%s: covers %s = %v", tc.name, name, got)
			}
		}
	}

	r := Static{AllocTags: []config.AllocTag{{Show: "a", Tag: "general"}, {Show: "b", Tag: "General"}}, ManualTags: []string{"pool1"}}.resolve("")
	for _, tc := range []struct {
		c    clusterInfo
		show string
		want bool
	}{{lg, "a", true}, {lg, "b", true}, {lg, "c", false}, {pool1, "c", true}} {
		if got := r.allowsShow(tc.c, tc.show); got != tc.want {
			t.Errorf("allowsShow(%v, %s) = %v", tc.c.Key, tc.show, got)
		}
	}
	if !(Static{}).resolve("").allowsShow(lg, "anything") {
		t.Error("an unrestricted instance refuses a show")
	}
}

func TestRestrictionSplit(t *testing.T) {
	at := func(pairs ...string) []config.AllocTag {
		var out []config.AllocTag
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, config.AllocTag{Show: pairs[i], Tag: pairs[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		a, b Static
		fa   string
		fb   string
		tag  string // "" no conflict
	}{
		{"both unrestricted", Static{}, Static{}, "", "", ""},
		{"same shows, same tag", Static{AllocTags: at("a", "general", "b", "general")}, Static{AllocTags: at("b", "General", "a", "general")}, "", "", ""},
		{"different shows, same tag", Static{AllocTags: at("a", "general")}, Static{AllocTags: at("b", "general")}, "", "", "general"},
		{"disjoint tags", Static{AllocTags: at("a", "general")}, Static{AllocTags: at("b", "desktop")}, "", "", ""},
		{"unrestricted against a show list", Static{}, Static{AllocTags: at("b", "desktop")}, "", "", "desktop"},
		{"other facilities", Static{AllocTags: at("a", "general")}, Static{AllocTags: at("b", "general")}, "L", "C", ""},
		{"one facility against all", Static{AllocTags: at("a", "general")}, Static{AllocTags: at("b", "general")}, "L", "", "general"},
		{"manual tags only against a show list", Static{ManualTags: []string{"pool1"}}, Static{AllocTags: at("b", "general")}, "", "", ""},
		{"manual tags share buckets", Static{ManualTags: []string{"pool1"}}, Static{ManualTags: []string{"pool1"}}, "", "", ""},
	} {
		a, b := tc.a.resolve(tc.fa), tc.b.resolve(tc.fb)
		tag, _, _ := a.splitWith(b)
		back, _, _ := b.splitWith(a)
		if tag != tc.tag || back != tc.tag {
			t.Errorf("%s: split on %q / %q, want %q", tc.name, tag, back, tc.tag)
		}
	}
}
