package match_test

import (
	"math"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/match"
)

func TestBookedMemory(t *testing.T) {
	t.Parallel()
	on := match.Memory{Shows: []string{"film"}, Headroom: 0.2}
	all := match.Memory{Shows: []string{"*"}, Headroom: 0.2}
	layer := func(show string, req int64, h match.History) *match.Layer {
		return &match.Layer{ShowName: show, Min: match.Resources{Cores: 100, Mem: req}, History: h}
	}
	hist := match.History{Finished: 5, MaxRSS: 10 * gb}
	for _, c := range []struct {
		name    string
		l       *match.Layer
		m       match.Memory
		mem     int64
		trimmed bool
		why     string
	}{
		{"off", layer("film", 30*gb, hist), match.Memory{}, 30 * gb, false, ""},
		{"other show", layer("ads", 30*gb, hist), on, 30 * gb, false, ""},
		{"trimmed", layer("film", 30*gb, hist), on, 12 * gb, true, "trimmed from 30.0 GB: its 5 finished frames used at most 10.0 GB"},
		{"every show", layer("ads", 30*gb, hist), all, 12 * gb, true, "trimmed"},
		{"no headroom", layer("film", 30*gb, hist), match.Memory{Shows: []string{"film"}}, 10 * gb, true, "trimmed"},
		{"too few finished", layer("film", 30*gb, match.History{Finished: 2, MaxRSS: gb}), on, 30 * gb, false, "2 of the 3 finished"},
		{"memory failure", layer("film", 32*gb, match.History{Finished: 9, MaxRSS: gb, MemFailed: true}), on, 32 * gb, false, "killed for its memory"},
		{"no use recorded", layer("film", 30*gb, match.History{Finished: 9}), on, 30 * gb, false, "no memory use"},
		{"used near the request", layer("film", 30*gb, match.History{Finished: 9, MaxRSS: 26 * gb}), on, 30 * gb, false, "at least the request"},
		{"used more than asked", layer("film", 30*gb, match.History{Finished: 9, MaxRSS: 40 * gb}), on, 30 * gb, false, "at least the request"},
		{"floor", layer("film", 4*gb, match.History{Finished: 9, MaxRSS: 1024}), on, match.MemFloor, true, "trimmed"},
		{"floor above the request", layer("film", 200*1024, match.History{Finished: 9, MaxRSS: 1024}), on, 200 * 1024, false, "in whole 256 MB"},
		{"rounded up", layer("film", 30*gb, match.History{Finished: 9, MaxRSS: 5*gb + 1}), on, 6*gb + match.MemFloor, true, "at most 5.0 GB"},
		{"rounded up to the request", layer("film", 6*gb+100, match.History{Finished: 9, MaxRSS: 5*gb + 1}), on, 6*gb + 100, false, "in whole"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := match.BookedMemory(c.l, c.m)
			if got.Mem != c.mem || got.Trimmed != c.trimmed || !strings.Contains(got.Why, c.why) || c.why == "" && got.Why != "" {
				t.Errorf("BookedMemory = %+v, want mem %d trimmed %v why containing %q", got, c.mem, c.trimmed, c.why)
			}
		})
	}
}

// FuzzBookedMemory: whatever the history, a frame is booked with at most
// its request and at least the smaller of the request and the floor; only a
// show in the setting without a memory failure is ever trimmed.
func FuzzBookedMemory(f *testing.F) {
	f.Add(int64(30*gb), int64(5), int64(10*gb), false, 0.2, true)
	f.Add(int64(0), int64(3), int64(1), false, 0.0, true)
	f.Add(int64(-5), int64(3), int64(-1), true, 10.0, false)
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), false, math.Inf(1), true)
	f.Fuzz(func(t *testing.T, req, finished, rss int64, failed bool, headroom float64, listed bool) {
		m := match.Memory{Shows: []string{"other"}, Headroom: headroom}
		if listed {
			m.Shows = append(m.Shows, "film")
		}
		l := &match.Layer{ShowName: "film", Min: match.Resources{Mem: req},
			History: match.History{Finished: finished, MaxRSS: rss, MemFailed: failed}}
		got := match.BookedMemory(l, m)
		if got.Trimmed != (got.Mem != req) {
			t.Fatalf("%+v: trimmed must say the request changed", got)
		}
		if got.Mem > req || got.Trimmed && (got.Mem < match.MemFloor || got.Mem%match.MemFloor != 0 || failed || !listed ||
			finished < match.MinFinished) {
			t.Fatalf("req %d history %+v listed %v headroom %g: booked %+v", req, l.History, listed, headroom, got)
		}
	})
}
