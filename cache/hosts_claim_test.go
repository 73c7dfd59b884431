package cache

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// A walk with a claim on the reservations the hosts were marked with leaves
// out exactly the hosts matching would refuse the claim's layer: held for
// another layer, not expired, no backfill.
func TestWalkLeavesOutHostsTheClaimRefuses(t *testing.T) {
	t.Parallel()
	f := newFake(nil, 0)
	f.allocs(t)
	for i := range 5 {
		m := baseHost(fmt.Sprintf("h%d", i), "a1")
		m.tags["t-"+m.id] = "general"
		f.addHost(t, m)
	}
	hour := epoch.Add(time.Hour)
	set := match.NewReservationSet([]match.Reservation{
		{Layer: "own", Host: "h0", Start: hour, Made: epoch},
		{Layer: "other", Host: "h1", Start: hour, Made: epoch},
		{Layer: "other", Host: "h2", Start: epoch.Add(-time.Hour), Made: epoch.Add(-2 * time.Hour)}, // expired
		{Layer: "other", Host: "h3", Made: epoch},                                                   // start unknown
	})
	// The same without h2's, which has expired: the set's claims of layers
	// holding none and not backfilling refuse every host it holds.
	unexpired := match.NewReservationSet(slices.DeleteFunc(slices.Clone(set.All()), func(r match.Reservation) bool { return r.Host == "h2" }))
	short := &match.Layer{ID: "short", Runs: match.Runs{Layer: 30 * time.Minute}}
	long := &match.Layer{ID: "long", Runs: match.Runs{Job: 2 * time.Hour}}
	for _, tc := range []struct {
		name  string
		mark  *match.ReservationSet // the set the hosts are marked with
		claim *match.Claim
		want  []string
	}{
		{"no claim", set, nil, []string{"h0", "h1", "h2", "h3", "h4"}},
		{"the holder", set, &match.Claim{Set: set, Layer: &match.Layer{ID: "own"}, Now: epoch}, []string{"h0", "h2", "h4"}},
		{"a backfill ending before the start", set, &match.Claim{Set: set, Layer: short, Now: epoch}, []string{"h0", "h1", "h2", "h4"}},
		{"a run ending after the start", set, &match.Claim{Set: set, Layer: long, Now: epoch}, []string{"h2", "h4"}},
		{"an unknown run", set, &match.Claim{Set: set, Layer: &match.Layer{ID: "new"}, Now: epoch}, []string{"h2", "h4"}},
		{"a claim on another set", unexpired, &match.Claim{Set: set, Layer: long, Now: epoch}, []string{"h0", "h1", "h2", "h3", "h4"}},
		{"the set's claim, h2's expired", set, ptr(set.Claim(long, epoch)), []string{"h2", "h4"}},
		{"the set's claim refusing every host", unexpired, ptr(unexpired.Claim(long, epoch)), []string{"h2", "h4"}},
		{"the set's claim of the holder", unexpired, ptr(unexpired.Claim(&match.Layer{ID: "own"}, epoch)), []string{"h0", "h2", "h4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.r.hosts.SetReservations(tc.mark)
			for _, uncontested := range []bool{false, true} {
				var got []string
				visit := func(h match.Host) bool { got = append(got, h.ID); return true }
				if uncontested {
					f.r.hosts.WalkUncontested("local", "general", match.Resources{}, tc.claim, visit)
				} else {
					f.r.hosts.Walk("local", "general", match.Resources{}, tc.claim, visit)
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Errorf("uncontested %v: visited %v, want %v", uncontested, got, tc.want)
				}
				if left := len(got) < 5; tc.claim != nil && tc.claim.LeftOut != left {
					t.Errorf("uncontested %v: LeftOut %v, want %v", uncontested, tc.claim.LeftOut, left)
				}
			}
		})
	}
	// Marking another set forgets the hosts the first held; a host that
	// comes after the marking is marked as it comes.
	other := match.NewReservationSet([]match.Reservation{
		{Layer: "other", Host: "h4", Start: hour, Made: epoch}, {Layer: "other", Host: "h5", Start: hour, Made: epoch}})
	f.r.hosts.SetReservations(other)
	checkHeld(t, f.r.hosts)
	m := baseHost("h5", "a1")
	m.tags["t-h5"] = "general"
	f.addHost(t, m)
	var got []string
	c := other.Claim(long, epoch)
	f.r.hosts.Walk("local", "general", match.Resources{}, &c, func(h match.Host) bool { got = append(got, h.ID); return true })
	slices.Sort(got)
	if want := []string{"h0", "h1", "h2", "h3"}; !slices.Equal(got, want) || !c.Kept || !c.RefusesAll() {
		t.Errorf("after marking another set: visited %v (kept %v, refusing all %v), want %v (true, true)", got, c.Kept, c.RefusesAll(), want)
	}
	// The same claim walked again once another round marked a third set
	// (rounds of other clusters read the reservations anew): the index no
	// longer keeps it, and says so, as matching then reads At no more.
	f.r.hosts.SetReservations(match.NewReservationSet(other.All()))
	got = got[:0]
	f.r.hosts.Walk("local", "general", match.Resources{}, &c, func(h match.Host) bool { got = append(got, h.ID); return true })
	if len(got) != 6 || c.Kept {
		t.Errorf("a claim on a set no longer marked: visited %v (kept %v), want all 6 hosts (false)", got, c.Kept)
	}
}

// Leaving held hosts out of the walks changes nothing matching decides:
// rounds over an index marked with the reservations and over one not marked
// (which offers matching every held host to refuse) place the same frames
// on the same hosts the same way and leave the same layers waiting for the
// same reasons, while the marked one is offered fewer hosts. The rounds
// run with each feature, one after another without handing capacity back,
// so the later ones find the farm full and explain their waits by the
// reservations they passed.
//
// With one reservation expired, or one whose start a layer's run ends
// before, a claim reads every held host it meets; with none, most claims
// refuse them all and step over them unread (match.Claim.RefusesAll).
func TestPlanSameWhenHeldHostsAreLeftOut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		starts []time.Time
	}{
		{"some expired, some unknown", []time.Time{epoch.Add(time.Hour), epoch.Add(10 * time.Minute), {}, epoch.Add(-time.Hour)}},
		{"none a claim can use but its own", []time.Time{epoch.Add(10 * time.Minute), epoch.Add(20 * time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			planSameWhenLeftOut(t, tc.starts)
		})
	}
}

func planSameWhenLeftOut(t *testing.T, starts []time.Time) {
	marked, markedLayers := featureFarm(t, 600, 160, 20)
	plain, plainLayers := featureFarm(t, 600, 160, 20)
	var rs []match.Reservation
	for i := range 64 {
		l := markedLayers[(i/8)*19]
		rs = append(rs, match.Reservation{Layer: l.ID, LayerName: l.Name, Host: fmt.Sprintf("host-%05d", i*9),
			HostName: fmt.Sprintf("name-host-%05d", i*9), Start: starts[i/8%len(starts)], Made: epoch.Add(-30 * time.Minute)})
	}
	set := match.NewReservationSet(rs)
	marked.r.hosts.SetReservations(set)
	memory := match.Memory{Shows: []string{"*"}, Headroom: 0.2}
	mi, pi := &countingIndex{Hosts: marked.r.hosts}, &countingIndex{Hosts: plain.r.hosts}
	for round, opt := range []match.Options{
		{}, {Locality: true}, {Memory: memory}, {Locality: true, Memory: memory}, {}, {Locality: true},
	} {
		opt.Seed, opt.Allocs, opt.Now, opt.Reservations = int64(round+1), []string{"a1", "a2"}, epoch, set
		got := match.Plan(markedLayers, mi, marked.r.usage, opt)
		want := match.Plan(plainLayers, pi, plain.r.usage, opt)
		if len(got.Placements) != len(want.Placements) {
			t.Fatalf("round %d: %d placements, %d without leaving held hosts out", round, len(got.Placements), len(want.Placements))
		}
		uses := map[match.Use]int{}
		for i, g := range got.Placements {
			w := want.Placements[i]
			if g.Frame.ID != w.Frame.ID || g.Host.ID != w.Host.ID || g.Size != w.Size || g.Use != w.Use || g.Warm != w.Warm {
				t.Fatalf("round %d placement %d: %s on %s (%+v, use %d, warm %d); without leaving held hosts out %s on %s (%+v, use %d, warm %d)",
					round, i, g.Frame.ID, g.Host.ID, g.Size, g.Use, g.Warm, w.Frame.ID, w.Host.ID, w.Size, w.Use, w.Warm)
			}
			uses[g.Use]++
		}
		if len(got.Waits) != len(want.Waits) {
			t.Fatalf("round %d: %d waits, %d without leaving held hosts out", round, len(got.Waits), len(want.Waits))
		}
		waits := 0
		for i, g := range got.Waits {
			w := want.Waits[i]
			if g.Layer.ID != w.Layer.ID || g.Reason != w.Reason || g.Detail != w.Detail {
				t.Fatalf("round %d wait %d: %s %s %q; without leaving held hosts out %s %s %q",
					round, i, g.Layer.ID, g.Reason, g.Detail, w.Layer.ID, w.Reason, w.Detail)
			}
			if g.Reason == match.ReasonCapacity {
				waits++
			}
		}
		t.Logf("round %d: %d placements (%d honoured, %d backfills), %d waiting for capacity", round,
			len(got.Placements), uses[match.UseHonoured], uses[match.UseBackfill], waits)
		checkHeld(t, marked.r.hosts)
	}
	t.Logf("hosts offered: %d marked, %d not", mi.visits, pi.visits)
	if mi.visits >= pi.visits {
		t.Errorf("the marked index offered %d hosts, the one not marked %d: nothing was left out", mi.visits, pi.visits)
	}
}

// countingIndex counts the hosts its walks offer; embedding *Hosts keeps
// its warm walks (match.WarmWalker).
type countingIndex struct {
	*Hosts
	visits int
}

func (c *countingIndex) counted(visit func(match.Host) bool) func(match.Host) bool {
	return func(h match.Host) bool {
		c.visits++
		return visit(h)
	}
}

func (c *countingIndex) Walk(facility, tag string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) {
	c.Hosts.Walk(facility, tag, min, claim, c.counted(visit))
}

func (c *countingIndex) WalkUncontested(facility, tag string, min match.Resources, claim *match.Claim, visit func(match.Host) bool) bool {
	return c.Hosts.WalkUncontested(facility, tag, min, claim, c.counted(visit))
}

func ptr[T any](v T) *T { return &v }

// checkHeld checks every level's count of held hosts against its slots,
// and each slot's flag against its host's reservation: a level counted
// with more held hosts than it holds would be skipped by walks that must
// see its other hosts.
func checkHeld(t *testing.T, h *Hosts) {
	t.Helper()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for k, ix := range h.st.index {
		ix.levels.Ascend(func(it levelItem) bool {
			n := 0
			it.lv.hosts.Ascend(func(s slot) bool {
				if s.held != (s.rec.resv != nil) {
					t.Errorf("%v: host %s filed held %v, its reservation %v", k, s.id, s.held, s.rec.resv)
				}
				if s.held {
					n++
				}
				return true
			})
			if n != it.lv.held {
				t.Errorf("%v: level of %d idle cores counts %d held hosts, holds %d", k, it.cores, it.lv.held, n)
			}
			return true
		})
	}
}

// A state loaded from a snapshot keeps the marks of the reservations: the
// same claim leaves the same held host out after the reload.
func TestHeldCarriedOverAReload(t *testing.T) {
	t.Parallel()
	h := NewHosts(func() time.Time { return epoch }, 0)
	r := match.Resources{Cores: 1600, Mem: 64 * gb}
	hosts := []match.Host{}
	for _, id := range []string{"h1", "h2"} {
		hosts = append(hosts, match.Host{ID: id, Name: id, Facility: "local", Alloc: "a1", OS: "linux",
			Tags: []string{"general"}, Total: r, Idle: r, MemFree: r.Mem, TempFree: gb, TempTotal: gb})
	}
	loaded := NewHosts(func() time.Time { return epoch }, 0)
	for _, x := range []*Hosts{h, loaded} {
		x.SetAlloc(cluster.Alloc{ID: "a1", Facility: "local", Tag: "general"})
		for _, host := range hosts {
			x.SetHost(host)
		}
	}
	set := match.NewReservationSet([]match.Reservation{{Layer: "other", Host: "h1", Start: epoch.Add(time.Hour), Made: epoch}})
	h.SetReservations(set)
	h.mu.Lock()
	h.swapLocked(loaded.st, 0)
	h.mu.Unlock()
	c := set.Claim(&match.Layer{ID: "new"}, epoch)
	var got []string
	h.Walk("local", "general", match.Resources{}, &c, func(x match.Host) bool { got = append(got, x.ID); return true })
	if !slices.Equal(got, []string{"h2"}) || !c.Kept {
		t.Errorf("after the reload the claim visited %v (kept %v), want [h2] (true)", got, c.Kept)
	}
	checkHeld(t, h)
}
