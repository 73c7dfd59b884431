package match_test

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

var localityNow = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// ran gives h a memory of a frame of layer (of job) that ran ago before
// localityNow.
func ran(h match.Host, layer, job string, ago time.Duration) match.Host {
	h.Ran = append(h.Ran, match.Ran{Layer: layer, Job: job, At: localityNow.Add(-ago)})
	return h
}

// idle leaves cores idle on h (whole cores).
func idle(h match.Host, cores int64) match.Host {
	h.Idle.Cores = cores * 100
	return h
}

func TestLocality(t *testing.T) {
	// The layer under test is "l" of job "job-l" (testLayer).
	cases := []struct {
		name     string
		hosts    []match.Host
		locality bool
		contest  string // a tag made contested
		want     string
		warm     match.Warmth // Placement.Warm
	}{
		{name: "tie broken by layer warmth", locality: true, want: "h2", warm: match.WarmLayer,
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16), "l", "job-l", 5*time.Minute)}},
		{name: "off changes nothing", locality: false, want: "h1",
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16), "l", "job-l", 5*time.Minute)}},
		{name: "layer before job", locality: true, want: "h3", warm: match.WarmLayer,
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16), "other", "job-l", time.Minute),
				ran(testHost("h3", "general", 16), "l", "job-l", 20*time.Minute)}},
		{name: "job warmth breaks a tie too", locality: true, want: "h2", warm: match.WarmJob,
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16), "other", "job-l", time.Minute),
				ran(testHost("h3", "general", 16), "x", "job-x", time.Minute)}},
		{name: "a better fit beats warmth", locality: true, want: "h1",
			hosts: []match.Host{idle(testHost("h1", "general", 16), 4), ran(idle(testHost("h2", "general", 16), 8), "l", "job-l", time.Minute)}},
		{name: "older than the window is cold", locality: true, want: "h1",
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16), "l", "job-l", match.WarmWindow+time.Minute)}},
		{name: "a running frame warms whatever its age", locality: true, want: "h2", warm: match.WarmLayer,
			hosts: []match.Host{testHost("h1", "general", 16), func() match.Host {
				h := ran(testHost("h2", "general", 16), "l", "job-l", 5*time.Hour)
				h.Ran[0].Running = 1
				return h
			}()}},
		{name: "tag pressure beats warmth", locality: true, contest: "pool", want: "h1",
			hosts: []match.Host{testHost("h1", "general", 16), ran(testHost("h2", "general", 16, "pool"), "l", "job-l", time.Minute)}},
		{name: "GPU hosts stay kept for GPU work", locality: true, want: "h1",
			hosts: []match.Host{testHost("h1", "general", 16), func() match.Host {
				h := ran(testHost("h2", "general", 16), "l", "job-l", time.Minute)
				h.Total.GPUs, h.Idle.GPUs = 1, 1
				return h
			}()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hosts := matchtest.NewHosts(tc.hosts)
			if tc.contest != "" {
				hosts.SetContested("local", tc.contest, true)
			}
			caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 10000, Burst: 10000}})
			res := match.Plan([]*match.Layer{testLayer("l", "s", 1, "general")}, hosts, caps,
				match.Options{Now: localityNow, Locality: tc.locality})
			if len(res.Placements) != 1 {
				t.Fatalf("placements %+v waits %+v, want one", res.Placements, res.Waits)
			}
			p := res.Placements[0]
			if p.Host.ID != tc.want || p.Warm != tc.warm {
				t.Fatalf("placed on %s warm %d, want %s warm %d", p.Host.ID, p.Warm, tc.want, tc.warm)
			}
		})
	}
}

func TestWarmthOf(t *testing.T) {
	h := ran(ran(testHost("h", "general", 16), "a", "j1", time.Minute), "b", "j2", 2*time.Minute)
	for _, tc := range []struct {
		layer, job string
		now        time.Time
		want       match.Warmth
	}{
		{"a", "j1", localityNow, match.WarmLayer},
		{"b", "j2", localityNow, match.WarmLayer},
		{"c", "j2", localityNow, match.WarmJob},
		{"c", "j3", localityNow, match.Cold},
		{"c", "", localityNow, match.Cold},
		{"a", "j1", localityNow.Add(match.WarmWindow), match.Cold},
		{"a", "j1", time.Time{}, match.Cold}, // no clock: only running frames warm
	} {
		if got, _ := match.WarmthOf(&h, tc.layer, tc.job, tc.now); got != tc.want {
			t.Errorf("WarmthOf(%s, %s, %v) = %d, want %d", tc.layer, tc.job, tc.now, got, tc.want)
		}
	}
}

// A warm host won on a tie is booked with the size every other host is
// weighed at: the layer's memory trimmed by its history, not its request.
func TestLocalityWithMemoryFromHistory(t *testing.T) {
	l := testLayer("l", "s", 1, "general")
	l.ShowName = "s"
	l.Min.Mem = 8 * gb
	l.History = match.History{Finished: 5, MaxRSS: gb}
	hosts := matchtest.NewHosts([]match.Host{testHost("h1", "general", 16),
		ran(testHost("h2", "general", 16), "l", "job-l", 5*time.Minute)})
	caps := capsWith(map[matchtest.SubKey]match.Subscription{{Show: "s", Alloc: "general"}: {Size: 10000, Burst: 10000}})
	mem := match.Memory{Shows: []string{"*"}, Headroom: 0.2}
	res := match.Plan([]*match.Layer{l}, hosts, caps, match.Options{Now: localityNow, Locality: true, Memory: mem})
	if len(res.Placements) != 1 {
		t.Fatalf("placements %+v waits %+v, want one", res.Placements, res.Waits)
	}
	p := res.Placements[0]
	want := match.BookedMemory(l, mem)
	if !want.Trimmed {
		t.Fatalf("the layer is not trimmed (%s): the case tests nothing", want.Why)
	}
	if p.Host.ID != "h2" || p.Warm != match.WarmLayer || p.Size.Mem != want.Mem {
		t.Fatalf("placed on %s warm %d with %d KB, want h2 warm %d with %d KB (trimmed)", p.Host.ID, p.Warm,
			p.Size.Mem, match.WarmLayer, want.Mem)
	}
}
