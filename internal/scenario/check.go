package scenario

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Outcome is what a runner saw: Run fills it from match's rounds; another
// runner (the scheduler's loop, explain) fills it from what it booked and
// reported, and Check reads the same expect lines against it.
type Outcome struct {
	Placed map[string]int    // frames placed per layer, over all rounds
	On     map[HostLayer]int // of them per host
	// Subs are subscription cores in use at the end, in core units; nil
	// when the runner does not know them (expect sub then fails).
	Subs map[SubKey]int64
	// Waits are the last round's waits by layer.
	Waits map[string]Wait
}

// HostLayer keys placements by host and layer.
type HostLayer struct{ Host, Layer string }

// SubKey names a subscription: a show on an allocation.
type SubKey struct{ Show, Alloc string }

// Wait is why a layer kept waiting frames: a match.Reason and its detail.
type Wait struct{ Reason, Detail string }

// NewOutcome returns an empty outcome without subscription usage.
func NewOutcome() *Outcome {
	return &Outcome{Placed: map[string]int{}, On: map[HostLayer]int{}, Waits: map[string]Wait{}}
}

// Place counts one frame of layer placed on host.
func (o *Outcome) Place(host, layer string) {
	o.Placed[layer]++
	o.On[HostLayer{host, layer}]++
}

// Check reads every expect line against the outcome and returns one error
// per line that does not hold, naming the file and line.
func (s *Scenario) Check(o *Outcome) []error {
	var errs []error
	for _, e := range s.Expects {
		if err := e.check(o); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: expect %s: %w", s.File, e.Line, e.Source, err))
		}
	}
	return errs
}

func (e Expect) check(o *Outcome) error {
	switch e.Kind {
	case ExpectPlaced:
		return compare(int64(o.Placed[e.Layer]), e.Op, e.N)
	case ExpectOn:
		return compare(int64(o.On[HostLayer{e.Host, e.Layer}]), e.Op, e.N)
	case ExpectSub:
		if o.Subs == nil {
			return fmt.Errorf("this runner does not report subscription usage")
		}
		cores, ok := o.Subs[SubKey{e.Show, e.Alloc}]
		if !ok {
			return fmt.Errorf("no subscription")
		}
		// Compared in whole cores.
		if cores%100 != 0 {
			return fmt.Errorf("got %d core units, not whole cores", cores)
		}
		return compare(cores/100, e.Op, e.N)
	case ExpectWait:
		w, ok := o.Waits[e.Layer]
		if !ok {
			return fmt.Errorf("no wait")
		}
		if w.Reason != e.Reason {
			return fmt.Errorf("reason %s (%s)", w.Reason, w.Detail)
		}
		if !strings.Contains(w.Detail, e.Text) {
			return fmt.Errorf("detail %q lacks %q", w.Detail, e.Text)
		}
		return nil
	case ExpectNoWait:
		if w, ok := o.Waits[e.Layer]; ok {
			return fmt.Errorf("waits: %s (%s)", w.Reason, w.Detail)
		}
		return nil
	}
	return fmt.Errorf("unknown kind %q", e.Kind)
}

func compare(got int64, op string, want int64) error {
	ok := false
	switch op {
	case "=":
		ok = got == want
	case ">=":
		ok = got >= want
	case "<=":
		ok = got <= want
	default:
		return fmt.Errorf("operator %q", op)
	}
	if !ok {
		return fmt.Errorf("got %d", got)
	}
	return nil
}

// String lists the outcome, sorted, for a failing test's log.
func (o *Outcome) String() string {
	var b strings.Builder
	for _, l := range slices.Sorted(maps.Keys(o.Placed)) {
		fmt.Fprintf(&b, "placed %s = %d\n", l, o.Placed[l])
	}
	for _, k := range slices.SortedFunc(maps.Keys(o.On), func(a, b HostLayer) int {
		return strings.Compare(a.Host+" "+a.Layer, b.Host+" "+b.Layer)
	}) {
		fmt.Fprintf(&b, "on %s %s = %d\n", k.Host, k.Layer, o.On[k])
	}
	for _, k := range slices.SortedFunc(maps.Keys(o.Subs), func(a, b SubKey) int {
		return strings.Compare(a.Show+" "+a.Alloc, b.Show+" "+b.Alloc)
	}) {
		fmt.Fprintf(&b, "sub %s %s = %d core units\n", k.Show, k.Alloc, o.Subs[k])
	}
	for _, l := range slices.Sorted(maps.Keys(o.Waits)) {
		fmt.Fprintf(&b, "wait %s %s (%s)\n", l, o.Waits[l].Reason, o.Waits[l].Detail)
	}
	return b.String()
}
