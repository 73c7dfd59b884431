package match_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

func TestThreshold(t *testing.T) {
	t.Parallel()
	after := 20 * time.Minute
	for _, tc := range []struct {
		prio int64
		mean float64
		want time.Duration
	}{
		{50, 50, after},            // the mean priority waits after
		{10, 50, after},            // a lower one too
		{100, 50, after / 2},       // twice the mean: half
		{1000, 50, after / 4},      // never below a quarter
		{0, 0, after},              // no priorities at all
		{80, 40, 10 * time.Minute}, // mean/priority
	} {
		l := &match.Layer{Priority: tc.prio}
		if got := match.Threshold(l, tc.mean, after); got != tc.want {
			t.Errorf("priority %d, mean %.0f: %v, want %v", tc.prio, tc.mean, got, tc.want)
		}
	}
}

func TestExpectedRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		runs match.Runs
		want time.Duration
		from string
	}{
		{match.Runs{Layer: time.Minute, Job: time.Hour, Service: 2 * time.Hour}, time.Minute, "layer"},
		{match.Runs{Job: time.Hour, Service: 2 * time.Hour}, time.Hour, "job"},
		{match.Runs{Service: 2 * time.Hour}, 2 * time.Hour, "service"},
		{match.Runs{}, 0, ""},
	} {
		d, from, ok := match.ExpectedRun(&match.Layer{Runs: tc.runs})
		if d != tc.want || from != tc.from || ok != (tc.want > 0) {
			t.Errorf("%+v: %v %q %v, want %v %q", tc.runs, d, from, ok, tc.want, tc.from)
		}
	}
}

func TestFillServiceRuns(t *testing.T) {
	t.Parallel()
	mk := func(svc string, run time.Duration, finished int64) *match.Layer {
		return &match.Layer{Services: []string{svc}, Runs: match.Runs{Layer: run}, History: match.History{Finished: finished}}
	}
	a, b := mk("render", 10*time.Minute, 3), mk("render", 30*time.Minute, 1)
	fresh, other := mk("render", 0, 0), mk("comp", 0, 0)
	known := mk("render", 0, 0)
	known.Runs.Service = time.Minute
	match.FillServiceRuns([]*match.Layer{a, b, fresh, other, known})
	// (3 x 10m + 1 x 30m) / 4 = 15m for render's layers; comp has none.
	for _, tc := range []struct {
		l    *match.Layer
		want time.Duration
	}{{a, 15 * time.Minute}, {b, 15 * time.Minute}, {fresh, 15 * time.Minute}, {other, 0}, {known, time.Minute}} {
		if tc.l.Runs.Service != tc.want {
			t.Errorf("%v: service run %v, want %v", tc.l.Services, tc.l.Runs.Service, tc.want)
		}
	}
}

func TestExpired(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		r    match.Reservation
		want bool
	}{
		{match.Reservation{Start: now.Add(-match.ReserveMargin)}, false},
		{match.Reservation{Start: now.Add(-match.ReserveMargin - time.Second)}, true},
		{match.Reservation{Made: now.Add(-match.ReserveMargin + time.Second)}, false}, // unknown start: by its making
		{match.Reservation{Made: now.Add(-time.Hour)}, true},
	} {
		if got := match.Expired(&tc.r, now); got != tc.want {
			t.Errorf("%+v: expired %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestBackfill(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &match.Reservation{Layer: "wide", LayerName: "wide", Host: "h1", HostName: "h1", Start: now.Add(time.Hour)}
	unknown := *r
	unknown.Start = time.Time{}
	for _, tc := range []struct {
		name string
		runs match.Runs
		r    *match.Reservation
		ok   bool
		why  string
	}{
		{"ends before", match.Runs{Layer: 30 * time.Minute}, r, true, "backfilled on host h1"},
		{"ends at the start", match.Runs{Layer: time.Hour}, r, true, "ends before"},
		{"ends after", match.Runs{Job: 61 * time.Minute}, r, false, "1h1m0s (job mean) ends after"},
		{"unknown run", match.Runs{}, r, false, "no finished frame"},
		{"unknown start", match.Runs{Layer: time.Minute}, &unknown, false, "unknown start"},
	} {
		l := &match.Layer{Runs: tc.runs}
		ok, why := match.Backfill(l, tc.r, now)
		if ok != tc.ok || !strings.Contains(why, tc.why) || match.CanBackfill(l, tc.r, now) != ok {
			t.Errorf("%s: %v %q, want %v and %q", tc.name, ok, why, tc.ok, tc.why)
		}
	}
}

// running is match.Running over hosts and their procs.
type running struct {
	hosts []match.Host
	procs map[string][]match.Proc
}

func (r running) AllHosts(facility, tag string, visit func(match.Host) bool) {
	for _, h := range r.hosts {
		if h.Facility == facility && slices.Contains(h.Tags, tag) && !visit(h) {
			return
		}
	}
}

func (r running) Procs(hostID string) []match.Proc { return slices.Clone(r.procs[hostID]) }

// index is the host index over the same hosts.
func (r running) index() match.Hosts { return matchtest.NewHosts(r.hosts) }

func (r running) Host(hostID string) (match.Host, bool) {
	i := slices.IndexFunc(r.hosts, func(h match.Host) bool { return h.ID == hostID })
	if i < 0 {
		return match.Host{}, false
	}
	return r.hosts[i], true
}

func TestReserve(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	core := match.Resources{Cores: 100, Mem: 2 << 20}
	host := func(id string, idleCores int64) match.Host {
		total := match.Resources{Cores: 1600, Mem: 64 << 20}
		idle := total
		idle.Cores = idleCores
		idle.Mem = total.Mem - (1600-idleCores)/100*core.Mem
		return match.Host{ID: id, Name: id, Facility: "f", Alloc: "a", OS: "linux", Tags: []string{"general"},
			Total: total, Idle: idle, MemFree: idle.Mem, TempFree: 1 << 30, TempTotal: 1 << 30}
	}
	// Each host runs 16 - idle one-core frames started at the given times,
	// expected to run 30 minutes (0: unknown).
	busy := func(started time.Duration, run time.Duration, n int) []match.Proc {
		var out []match.Proc
		for range n {
			out = append(out, match.Proc{Size: core, Started: now.Add(-started), Run: run})
		}
		return out
	}
	farm := func() running {
		hs := []match.Host{host("h1", 0), host("h2", 800), host("h3", 0), host("h4", 0)}
		ps := map[string][]match.Proc{
			// h1 frees at now+20m (its frames started 10m ago).
			"h1": busy(10*time.Minute, 30*time.Minute, 16),
			// h2 needs 8 of its frames to end: 25m from now.
			"h2": busy(5*time.Minute, 30*time.Minute, 8),
			// h3's frames are overdue: each is expected to take half its
			// run more, 15m: the soonest.
			"h3": busy(40*time.Minute, 30*time.Minute, 16),
			// h4's run is unknown: after every known one.
			"h4": busy(50*time.Minute, 0, 16),
		}
		return running{hs, ps}
	}
	wide := &match.Layer{ID: "wide", Name: "wide", Facility: "f", Tags: []string{"general"}, Priority: 50,
		Min: match.Resources{Cores: 1600, Mem: 32 << 20}, Threadable: true}
	opt := match.ReserveOptions{Now: now, After: 10 * time.Minute}
	waited := []match.Waiting{{Layer: wide, Since: now.Add(-15 * time.Minute)}}

	rn := farm()
	next, made, _ := match.Reserve(nil, map[string]int64{"wide": 3}, waited, rn.index(), rn, opt)
	var got []string
	for _, r := range made {
		got = append(got, r.Host+"@"+r.Start.Sub(now).String())
	}
	if want := []string{"h3@15m0s", "h1@20m0s", "h2@25m0s"}; !slices.Equal(got, want) || len(next) != 3 {
		t.Fatalf("reserved %v (%d kept), want %v: the soonest first, one host a waiting frame", got, len(next), want)
	}

	t.Run("unknown runs last, with no start", func(t *testing.T) {
		rn := farm()
		_, made, _ := match.Reserve(nil, map[string]int64{"wide": 4}, waited, rn.index(), rn, opt)
		if len(made) != 4 || made[3].Host != "h4" || !made[3].Start.IsZero() {
			t.Errorf("reserved %+v, want h4 last with an unknown start", made)
		}
	})
	t.Run("not before its threshold", func(t *testing.T) {
		rn := farm()
		early := []match.Waiting{{Layer: wide, Since: now.Add(-5 * time.Minute)}}
		if next, _, _ := match.Reserve(nil, map[string]int64{"wide": 3}, early, rn.index(), rn, opt); len(next) != 0 {
			t.Errorf("reserved %+v after 5 of 10 minutes", next)
		}
	})
	t.Run("kept, trimmed, dropped", func(t *testing.T) {
		rn := farm()
		// One frame left waiting keeps one host.
		kept, made, _ := match.Reserve(next, map[string]int64{"wide": 1}, nil, rn.index(), rn, opt)
		if len(made) != 0 || len(kept) != 1 || kept[0].Host != "h3" {
			t.Errorf("kept %+v (made %+v), want h3 alone", kept, made)
		}
		// The layer left the queue: nothing kept.
		if kept, _, _ := match.Reserve(next, map[string]int64{}, nil, rn.index(), rn, opt); len(kept) != 0 {
			t.Errorf("kept %+v for a layer no longer queued", kept)
		}
		// Past the start plus the margin: dropped.
		late := opt
		late.Now = now.Add(20*time.Minute + match.ReserveMargin + time.Second)
		kept, _, _ = match.Reserve(next, map[string]int64{"wide": 3}, nil, rn.index(), rn, late)
		if len(kept) != 1 || kept[0].Host != "h2" {
			t.Errorf("kept %+v at start+margin+1s of h1, want h2 alone", kept)
		}
	})
	t.Run("an unknown start is worked out once runs are known", func(t *testing.T) {
		rn := farm()
		unknown := []match.Reservation{{Layer: "wide", Host: "h1", Made: now.Add(-time.Minute)}}
		kept, _, _ := match.Reserve(unknown, map[string]int64{"wide": 1}, waited, rn.index(), rn, opt)
		if len(kept) != 1 || !kept[0].Start.Equal(now.Add(20*time.Minute)) {
			t.Errorf("kept %+v, want h1 from now+20m", kept)
		}
	})
	t.Run("a host with room now replaces the latest", func(t *testing.T) {
		rn := farm()
		rn.hosts = append(rn.hosts, host("h5", 1600))
		held := []match.Reservation{
			{Layer: "wide", Host: "h1", Start: now.Add(20 * time.Minute), Made: now},
			{Layer: "wide", Host: "h2", Start: now.Add(25 * time.Minute), Made: now},
		}
		kept, made, _ := match.Reserve(held, map[string]int64{"wide": 2}, waited, rn.index(), rn, opt)
		if len(made) != 1 || made[0].Host != "h5" || len(kept) != 2 || kept[0].Host != "h1" || kept[1].Host != "h5" {
			t.Errorf("kept %+v, made %+v: want h5 (empty) in place of h2", kept, made)
		}
	})
	t.Run("a host with room now replaces one made before, not one made with it", func(t *testing.T) {
		rn := farm()
		rn.hosts = append(rn.hosts, host("h5", 1600), host("h6", 1600))
		held := []match.Reservation{{Layer: "wide", Host: "h1", Start: now.Add(-time.Minute), Made: now.Add(-time.Hour)}}
		kept, made, _ := match.Reserve(held, map[string]int64{"wide": 1}, waited, rn.index(), rn, opt)
		if len(made) != 1 || len(kept) != 1 || kept[0].Host != "h5" {
			t.Errorf("kept %+v, made %+v: want h5 in place of h1 (late), h6 left", kept, made)
		}
	})
	t.Run("a layer reserves 8 hosts at most", func(t *testing.T) {
		var hs []match.Host
		for i := range 12 {
			hs = append(hs, host(fmt.Sprintf("e%02d", i), 1600))
		}
		rn := running{hosts: hs}
		_, made, _ := match.Reserve(nil, map[string]int64{"wide": 20}, waited, rn.index(), rn, opt)
		if len(made) != match.MaxHostsPerLayer {
			t.Errorf("reserved %d hosts for 20 waiting frames, want %d", len(made), match.MaxHostsPerLayer)
		}
	})
	t.Run("bounded and elsewhere", func(t *testing.T) {
		rn := farm()
		other := *wide
		other.ID, other.Priority = "other", 100
		two := []match.Waiting{waited[0], {Layer: &other, Since: now.Add(-15 * time.Minute)}}
		o := opt
		o.Max = 1
		o.Elsewhere = match.NewReservationSet([]match.Reservation{{Host: "h3"}})
		_, made, _ := match.Reserve(nil, map[string]int64{"wide": 1, "other": 1}, two, rn.index(), rn, o)
		if len(made) != 1 || made[0].Layer != "other" || made[0].Host != "h1" {
			t.Errorf("made %+v, want the higher priority alone on h1 (h3 reserved elsewhere)", made)
		}
	})
}
