package schedulertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/scenario"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/scheduler"
)

// RunScenario runs the scenario file at path through the loop (Outcome) and
// checks its expect lines, failing the test on each that does not hold.
func RunScenario(t *testing.T, path string) {
	t.Helper()
	sc, err := scenario.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Outcome(t, sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range sc.Check(out) {
		t.Errorf("the loop: %v", err)
	}
	if t.Failed() {
		t.Logf("the loop's outcome:\n%s", out)
	}
}

// Outcome runs a scenario through the loop: its hosts, caps and layers go
// into a harness's parts (an allocation per host alloc, the layers queued in
// the cluster their tags fall in, the running lines' frames taken from the
// hosts and counted in the caps), the loop owns every cluster and runs its
// rounds with a Booker that commits every placement (counted in the caps;
// the hosts keep what planning took, as the replica's hold does), and once
// every cluster sleeps with nothing left to do the outcome holds what was
// committed, the caps' subscription usage, and why layers wait
// (Scheduler.Waits).
//
// It refuses, naming file:line, what the loop decides itself: rounds and
// finish (the loop runs rounds until nothing places), seed (it draws one a
// round), contested tags (tag pressure comes from the queue's demand), an
// allocs= list other than all the hosts' allocations (each cluster plans
// its own), and a layer whose tags fall in several clusters (the harness's
// queue keeps a layer in one).
func Outcome(t testing.TB, sc *scenario.Scenario) (*scenario.Outcome, error) {
	t.Helper()
	h, keys, layerKeys, err := scenarioHarness(t, sc)
	if err != nil {
		return nil, err
	}
	h.Start()
	h.awaitSettled(len(keys), layerKeys)
	out := h.outcome(sc, keys)
	h.Stop()
	return out, nil
}

// SteppedOutcome runs a scenario as Outcome does, through the same loop
// and parts, but driven as the simulator (package sim) drives it
// (Scheduler.Drive, scheduler.Settle): no goroutine per cluster and no
// timer, the clusters' rounds run one at a time in key order while any is
// woken, a retry asked for run at once.
func SteppedOutcome(t testing.TB, sc *scenario.Scenario) (*scenario.Outcome, error) {
	t.Helper()
	h, keys, _, err := scenarioHarness(t, sc)
	if err != nil {
		return nil, err
	}
	cs := h.Sched.Drive(context.Background())
	due := make([]bool, len(cs))
	for range steppedRetries {
		scheduler.Settle(cs, func(i int, retry time.Duration) { due[i] = retry > 0 }, nil)
		retried := false
		for i, c := range cs {
			if due[i] {
				retried = true
				due[i] = c.Due() > 0
			}
		}
		if !retried {
			return h.outcome(sc, keys), nil
		}
	}
	return nil, fmt.Errorf("%s: the stepped loop still retried rounds after %d settles", sc.File, steppedRetries)
}

// steppedRetries bounds the settles of SteppedOutcome: a scenario whose
// placements all commit asks for no retry.
const steppedRetries = 100

// scenarioHarness builds a harness holding a scenario's hosts, caps and
// layers, the loop owning every cluster (not started), and returns the
// clusters and each layer's.
func scenarioHarness(t testing.TB, sc *scenario.Scenario) (*Harness, []cluster.Key, []cluster.Key, error) {
	t.Helper()
	in := sc.Inputs()
	allocs := scenarioAllocs(in.Hosts)
	keyer := cluster.NewKeyer(allocs, 1)
	layerKeys, err := refuseForLoop(sc, allocs, keyer)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg := scheduler.Config{Policy: in.Options.Policy, Order: in.Options.Order,
		SelfishServices: in.Options.SelfishServices, RoundPlacements: in.Options.MaxPlacements,
		Locality: in.Options.Locality, Memory: in.Options.Memory}
	h := New(t, Setup{Hosts: in.Hosts, Allocs: allocs, Caps: in.Caps, Config: cfg})
	h.Clock.Set(scenario.Now)
	if err := takeRunning(sc, h, in.Running); err != nil {
		return nil, nil, nil, err
	}
	keys := h.Hosts.ClusterKeys(keyer)
	for i, l := range in.Layers {
		l.ShowName = l.ShowID // a scenario's names double as ids
		h.Queue.Add(layerKeys[i], l)
		if !slices.Contains(keys, layerKeys[i]) {
			keys = append(keys, layerKeys[i])
		}
	}
	h.Owner.Claim(keys...)
	return h, keys, layerKeys, nil
}

// outcome is what the loop committed, the caps' subscription usage and why
// layers wait.
func (h *Harness) outcome(sc *scenario.Scenario, keys []cluster.Key) *scenario.Outcome {
	out := scenario.NewOutcome()
	for _, p := range h.Booker.Committed() {
		out.Place(p.Host.ID, p.Layer.ID)
	}
	for _, k := range keys {
		for _, w := range h.Sched.Waits(k) {
			out.Waits[w.Layer.ID] = scenario.Wait{Reason: string(w.Reason), Detail: w.Detail}
		}
	}
	out.Subs = map[scenario.SubKey]int64{}
	for _, s := range sc.Subs {
		sub, _ := h.Caps.Subscription(s.Show, s.Alloc)
		out.Subs[scenario.SubKey{Show: s.Show, Alloc: s.Alloc}] = sub.Cores
	}
	return out
}

// scenarioAllocs is an allocation per host alloc, tagged with its name, as
// scenario hosts carry it.
func scenarioAllocs(hosts []match.Host) []cluster.Alloc {
	var out []cluster.Alloc
	for _, h := range hosts {
		a := cluster.Alloc{ID: h.Alloc, Facility: h.Facility, Tag: h.Alloc}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// refuseForLoop refuses what the loop decides itself (Outcome) and returns
// each layer's cluster, in file order.
func refuseForLoop(sc *scenario.Scenario, allocs []cluster.Alloc, keyer *cluster.Keyer) ([]cluster.Key, error) {
	var errs []error
	refuse := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: not for the loop: %s", sc.File, line, fmt.Sprintf(format, a...)))
	}
	o := sc.Options
	if o.Rounds != 1 || o.Finish != 0 {
		refuse(o.Line, "rounds= and finish=: the loop runs rounds until nothing places, and no proc ends")
	}
	if o.Seed != 1 {
		refuse(o.Line, "seed=%d: the loop draws a seed a round", o.Seed)
	}
	if len(o.Allocs) > 0 && !sameAllocs(o.Allocs, allocs) {
		refuse(o.Line, "allocs=%v: each cluster plans its own allocations; list every host's or none", o.Allocs)
	}
	for _, c := range sc.Contested {
		refuse(c.Line, "contested %s: in the loop tag pressure comes from the queued work's demand", c.Tag)
	}
	var keys []cluster.Key
	for _, l := range sc.Layers {
		ks := keyer.OfLayer("local", match.ParseTags(l.Tags))
		if len(ks) != 1 {
			refuse(l.Line, "layer %s: its tags fall in %d clusters %v; the harness queues a layer in one",
				l.Name, len(ks), ks)
			ks = append(ks, cluster.Key{})
		}
		keys = append(keys, ks[0])
	}
	return keys, errors.Join(errs...)
}

func sameAllocs(names []string, allocs []cluster.Alloc) bool {
	if len(names) != len(allocs) {
		return false
	}
	for _, a := range allocs {
		if !slices.Contains(names, a.ID) {
			return false
		}
	}
	return true
}

// takeRunning takes the running lines' frames from the hosts and counts
// them in the caps before the loop starts.
func takeRunning(sc *scenario.Scenario, h *Harness, running []match.Placement) error {
	i := 0
	for _, r := range sc.Running {
		for range r.N {
			p := running[i]
			i++
			if !h.Hosts.Take(p.Host.ID, p.Size) {
				return fmt.Errorf("%s:%d: running %s does not fit on %s", sc.File, r.Line, r.Layer, r.Host)
			}
			h.Caps.Apply(p)
		}
	}
	return nil
}

// awaitSettled waits until the loop has nothing left to do, when nothing
// but its own rounds wakes its clusters and the Booker commits everything:
// all n clusters asleep, and each cluster of keys read its frames again after
// its last Book call (a round that booked wakes its cluster again, so a
// cluster counted asleep with such a round behind it is about to wake).
func (h *Harness) awaitSettled(n int, keys []cluster.Key) {
	h.t.Helper()
	h.Await(0, fmt.Sprintf("%d clusters asleep with nothing left to book", n), func(evs []Event) bool {
		asleep := 0
		read, booked := map[cluster.Key]int{}, map[cluster.Key]int{}
		for i, e := range evs {
			switch e.Kind {
			case Asleep:
				asleep = e.N
			case Frames:
				read[e.Key] = i + 1
			case Book:
				booked[e.Key] = i + 1
			}
		}
		if asleep != n {
			return false
		}
		for _, k := range keys {
			if read[k] == 0 || read[k] < booked[k] {
				return false
			}
		}
		return true
	})
}
