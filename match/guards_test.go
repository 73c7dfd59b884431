package match_test

import (
	"strings"
	"testing"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// TestGuardCases: matching places a frame exactly when Cuebot's guards (and
// the folder cap) let its booking commit, so the re-check never drops what
// matching placed for a cap (dispatch's TestRecheckGuardCases runs the same
// table).
func TestGuardCases(t *testing.T) {
	for _, gc := range matchtest.GuardCases() {
		t.Run(gc.Name, func(t *testing.T) {
			h := match.Host{
				ID: "h", Name: "h", Facility: "local", Alloc: "a", OS: "linux", Tags: []string{"a", "t"},
				Total:   match.Resources{Cores: 800, Mem: 16 * gb, GPUs: 4, GPUMem: 4 * gb},
				Idle:    match.Resources{Cores: 800, Mem: 16 * gb, GPUs: 4, GPUMem: 4 * gb},
				MemFree: 16 * gb, TempFree: gb, TempTotal: gb,
			}
			l := &match.Layer{ID: "l", JobID: "j", ShowID: "s", FolderID: "f", Facility: "local", Priority: 1,
				Tags: []string{"t"}, Min: gc.Size, Frames: []match.Frame{{ID: "f1"}}}
			caps := matchtest.NewCaps()
			if gc.SubFound {
				caps.Subs[matchtest.SubKey{Show: "s", Alloc: "a"}] = gc.Sub
			}
			caps.Jobs["j"], caps.Folders["f"] = gc.Job, gc.Folder
			res := match.Plan([]*match.Layer{l}, matchtest.NewHosts([]match.Host{h}), caps, match.Options{Allocs: []string{"a"}})
			placed := len(res.Placements) == 1
			if placed != gc.Books {
				t.Fatalf("rule %q: placed %v, want %v (waits %+v)", gc.Rule, placed, gc.Books, res.Waits)
			}
			if placed {
				if got := res.Placements[0].Size; got.Cores != gc.Size.Cores || got.GPUs != gc.Size.GPUs {
					t.Fatalf("placed with size %+v, the case counts %+v", got, gc.Size)
				}
				return
			}
			if len(res.Waits) != 1 || res.Waits[0].Reason != match.ReasonCap || !strings.Contains(res.Waits[0].Detail, gc.Refused) {
				t.Fatalf("rule %q: waits %+v, want one %s wait naming the %s", gc.Rule, res.Waits, match.ReasonCap, gc.Refused)
			}
		})
	}
}
