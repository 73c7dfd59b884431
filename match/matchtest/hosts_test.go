package matchtest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/match"
)

// Walk visits exactly the hosts of the tag with at least min idle, in
// ascending (idle cores, idle memory, id) order, after any sequence of Take
// and Return; WalkUncontested those of them carrying no contested tag but
// the one walked. Checked against a brute-force filter and sort.
func TestHostsWalkOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	var hs []match.Host
	for i := range 300 {
		total := match.Resources{Cores: 100 * (1 + r.Int64N(16)), Mem: 1024 * (1 + r.Int64N(8)), GPUs: r.Int64N(3)}
		hs = append(hs, match.Host{
			ID: fmt.Sprintf("h%03d", 299-i), Facility: "f", Tags: []string{"all", fmt.Sprintf("t%d", i%3)},
			Total: total, Idle: total,
		})
	}
	f := NewHosts(hs)
	contested := map[string]bool{}
	for step := range 2000 {
		if step%150 == 0 {
			for _, tag := range []string{"all", "t0", "t1", "t2"} {
				contested[tag] = r.IntN(3) == 0
				f.SetContested("f", tag, contested[tag])
			}
		}
		h := hs[r.IntN(len(hs))]
		cur, _ := f.Host(h.ID)
		d := match.Resources{Cores: 100 * r.Int64N(3), Mem: 512 * r.Int64N(3), GPUs: r.Int64N(2)}
		if r.IntN(3) == 0 {
			if cur.Total.Covers(cur.Idle.Add(d)) {
				f.Return(h.ID, d)
			}
		} else if got, want := f.Take(h.ID, d), cur.Idle.Covers(d); got != want {
			t.Fatalf("step %d: Take(%s, %+v) = %v with idle %+v", step, h.ID, d, got, cur.Idle)
		}
		if step%100 != 0 {
			continue
		}
		min := match.Resources{Cores: 100 * r.Int64N(8), Mem: 512 * r.Int64N(8), GPUs: r.Int64N(2)}
		for _, tag := range []string{"all", "t1"} {
			var got []string
			f.Walk("f", tag, min, nil, func(h match.Host) bool { got = append(got, h.ID); return true })
			var want []match.Host
			for _, h := range hs {
				now, _ := f.Host(h.ID)
				if slices.Contains(now.Tags, tag) && now.Idle.Covers(min) {
					want = append(want, now)
				}
			}
			slices.SortFunc(want, func(a, b match.Host) int {
				return cmp.Or(cmp.Compare(a.Idle.Cores, b.Idle.Cores), cmp.Compare(a.Idle.Mem, b.Idle.Mem), strings.Compare(a.ID, b.ID))
			})
			var wantIDs []string
			for _, h := range want {
				wantIDs = append(wantIDs, h.ID)
			}
			if !slices.Equal(got, wantIDs) {
				t.Fatalf("step %d: Walk(%s, %+v) = %v, want %v", step, tag, min, got, wantIDs)
			}
			got = nil
			skipped := f.WalkUncontested("f", tag, min, nil, func(h match.Host) bool { got = append(got, h.ID); return true })
			var wantSkipped bool
			wantIDs = slices.DeleteFunc(wantIDs, func(id string) bool {
				h, _ := f.Host(id)
				for _, other := range h.Tags {
					if other != tag && contested[other] {
						wantSkipped = true
						return true
					}
				}
				return false
			})
			if !slices.Equal(got, wantIDs) || skipped != wantSkipped {
				t.Fatalf("step %d: WalkUncontested(%s, %+v) = %v, %v, want %v, %v (contested %v)",
					step, tag, min, got, skipped, wantIDs, wantSkipped, contested)
			}
		}
	}
	if f.Tagged("f", "nosuch") || !f.Tagged("f", "t2") {
		t.Error("Tagged disagrees with the hosts' tags")
	}
}
