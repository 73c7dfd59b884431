package dispatch

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cuesched/cuesched/match"
)

func rowsOf(keys ...rowKey) map[rowKey]struct{} {
	m := map[rowKey]struct{}{}
	for _, k := range keys {
		m[k] = struct{}{}
	}
	return m
}

// one is a batch of one placement.
func one() *member { return &member{ps: make([]match.Placement, 1)} }

// entered reports whether tk may begin, without waiting.
func entered(tk *ticket) bool {
	select {
	case <-tk.ready:
		return true
	default:
		return false
	}
}

func TestGateOrder(t *testing.T) {
	t.Parallel()
	h1, h2, j1 := rowKey{'h', "h1", ""}, rowKey{'h', "h2", ""}, rowKey{'j', "j1", ""}
	tests := []struct {
		name string
		rows []map[rowKey]struct{} // batches in arrival order
		// in: which batches may begin at once; then, leaving batch 0,
		// which may begin.
		in, afterFirst []bool
	}{
		{"disjoint batches begin together",
			[]map[rowKey]struct{}{rowsOf(h1), rowsOf(h2), rowsOf(j1)},
			[]bool{true, true, true}, []bool{false, true, true}},
		{"a batch sharing a row waits for the one before it",
			[]map[rowKey]struct{}{rowsOf(h1, j1), rowsOf(j1)},
			[]bool{true, false}, []bool{false, true}},
		// The third shares nothing with the holder but waits behind the
		// second, which it overlaps: arrival order among overlapping
		// batches, so none waits forever.
		{"a batch waits behind an earlier waiting batch it overlaps",
			[]map[rowKey]struct{}{rowsOf(h1), rowsOf(h1, h2), rowsOf(h2)},
			[]bool{true, false, false}, []bool{false, true, false}},
		{"a later disjoint batch passes a waiting one",
			[]map[rowKey]struct{}{rowsOf(h1), rowsOf(h1), rowsOf(h2)},
			[]bool{true, false, true}, []bool{false, true, true}},
		{"a batch without rows never waits",
			[]map[rowKey]struct{}{rowsOf(h1), rowsOf()},
			[]bool{true, true}, []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := gate{most: 1} // no two batches together
			var tks []*ticket
			for _, r := range tc.rows {
				tks = append(tks, g.arrive(one(), r))
			}
			for i, tk := range tks {
				if got := entered(tk); got != tc.in[i] {
					t.Errorf("batch %d may begin: %v, want %v", i, got, tc.in[i])
				}
			}
			g.leave(tks[0])
			for i, tk := range tks[1:] {
				if got := entered(tk); got != tc.afterFirst[i+1] {
					t.Errorf("after batch 0 left, batch %d may begin: %v, want %v", i+1, got, tc.afterFirst[i+1])
				}
			}
			if got, want := g.waiting(), countFalse(tc.afterFirst[1:]); got != want {
				t.Errorf("waiting after batch 0 left: %d, want %d", got, want)
			}
		})
	}
}

func countFalse(bs []bool) int {
	n := 0
	for _, b := range bs {
		if !b {
			n++
		}
	}
	return n
}

// A batch given up while it waits (its context ended) leaves the queue, and
// the batches behind it move on.
func TestGateEnterCancelled(t *testing.T) {
	t.Parallel()
	h1, h2 := rowKey{'h', "h1", ""}, rowKey{'h', "h2", ""}
	g := gate{most: 1}
	first, err := g.enter(t.Context(), one(), rowsOf(h1), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error)
	go func() {
		_, err := g.enter(ctx, one(), rowsOf(h1, h2), nil)
		gaveUp <- err
	}()
	waitFor(t, "the second batch waiting", func() bool { return g.waiting() == 1 })
	third := g.arrive(one(), rowsOf(h2)) // behind the second, which it overlaps
	if entered(third) {
		t.Fatal("a batch overlapping an earlier waiting batch began")
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("enter with a cancelled context: %v, want context.Canceled", err)
	}
	if !entered(third) {
		t.Error("the batch behind a batch given up still waits")
	}
	g.leave(third)
	g.leave(first)
	if n := g.waiting(); n != 0 || len(g.queue) != 0 {
		t.Errorf("after every batch left: %d waiting, %d queued", n, len(g.queue))
	}
}

// batchRows names every row of Cuebot's a booking locks for update that
// another batch of the same placements' shows, jobs or hosts would lock too.
func TestBatchRows(t *testing.T) {
	t.Parallel()
	l := &match.Layer{ID: "l1", JobID: "j1", ShowID: "s1", FolderID: "f1", DeptID: "d1", Limits: []string{"lim1"}}
	ps := []match.Placement{
		{Layer: l, Frame: match.Frame{ID: "fr1"}, Host: match.Host{ID: "h1", Alloc: "a1"}},
		{Layer: l, Frame: match.Frame{ID: "fr2"}, Host: match.Host{ID: "h2", Alloc: "a2"}},
		{Frame: match.Frame{ID: "fr3"}, Host: match.Host{ID: "h3"}}, // malformed: the re-check drops it
	}
	got := batchRows(ps)
	want := rowsOf(rowKey{'h', "h1", ""}, rowKey{'h', "h2", ""}, rowKey{'l', "l1", ""}, rowKey{'j', "j1", ""},
		rowKey{'s', "s1", "a1"}, rowKey{'s', "s1", "a2"}, rowKey{'f', "f1", ""}, rowKey{'p', "s1", "d1"},
		rowKey{'r', "lim1", ""})
	if len(got) != len(want) {
		t.Fatalf("batchRows: %v, want %v", got, want)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("batchRows lacks %v", k)
		}
	}
}

// A batch whose cluster is left while it waits gives up without beginning.
// (One let in with its cluster left is settled by runGroup before the
// transaction begins: TestBatchOfALeftClusterNotBooked.)
func TestGateEnterLeaving(t *testing.T) {
	t.Parallel()
	h1 := rowKey{'h', "h1", ""}
	g := gate{most: 1}
	first, err := g.enter(t.Context(), one(), rowsOf(h1), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaving := make(chan struct{})
	gaveUp := make(chan error)
	go func() {
		_, err := g.enter(t.Context(), one(), rowsOf(h1), leaving)
		gaveUp <- err
	}()
	waitFor(t, "the second batch waiting", func() bool { return g.waiting() == 1 })
	close(leaving)
	if err := <-gaveUp; !errors.Is(err, errLeft) {
		t.Fatalf("enter, the cluster left while waiting: %v, want errLeft", err)
	}
	g.leave(first)
	if len(g.queue) != 0 {
		t.Errorf("%d batches still queued", len(g.queue))
	}
}

// Batches that waited behind the same batch begin together, in the
// transaction of the first of them, while they fit in most; a batch that
// overlaps another still in flight, or an earlier one left waiting, waits.
func TestGateMerges(t *testing.T) {
	t.Parallel()
	h1, h2, h3, j1 := rowKey{'h', "h1", ""}, rowKey{'h', "h2", ""}, rowKey{'h', "h3", ""}, rowKey{'j', "j1", ""}
	type batch struct {
		rows map[rowKey]struct{}
		size int
	}
	tests := []struct {
		name    string
		most    int
		batches []batch // batch 0 is in flight; the others arrive while it is
		// after batch 0 left: which batch books each (-1: still waits)
		lead []int
	}{
		{"the batches waiting behind one book together",
			4, []batch{{rowsOf(j1), 2}, {rowsOf(h1, j1), 2}, {rowsOf(h2, j1), 1}, {rowsOf(h3, j1), 1}},
			[]int{1, 1, 1}},
		// The third does not fit and waits; the fourth, overlapping only
		// the second, fits; the fifth overlaps the waiting third.
		{"no more than most",
			4, []batch{{rowsOf(j1), 2}, {rowsOf(h1, j1), 2}, {rowsOf(h2, j1), 3}, {rowsOf(h1), 2}, {rowsOf(h3, j1), 1}},
			[]int{1, -1, 1, -1}},
		{"a batch alone larger than most still books",
			2, []batch{{rowsOf(j1), 2}, {rowsOf(h1, j1), 5}, {rowsOf(h2, j1), 1}},
			[]int{1, -1}},
		{"a batch overlapping only batches booked together joins them",
			4, []batch{{rowsOf(j1), 1}, {rowsOf(h1, j1), 1}, {rowsOf(h2, j1), 1}, {rowsOf(h1, h3), 1},
				{rowsOf(h3), 1}},
			[]int{1, 1, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := gate{most: tc.most}
			var tks []*ticket
			for _, b := range tc.batches {
				tks = append(tks, g.arrive(&member{ps: make([]match.Placement, b.size)}, b.rows))
			}
			for i, tk := range tks[1:] {
				if entered(tk) {
					t.Fatalf("batch %d began while batch 0, which it overlaps, was in flight", i+1)
				}
			}
			g.leave(tks[0])
			for i, want := range tc.lead {
				tk := tks[i+1]
				got := -1
				switch {
				case !entered(tk):
				case tk.lead == nil:
					got = i + 1
				default:
					got = slices.Index(tks, tk.lead)
				}
				if got != want {
					t.Errorf("batch %d booked by batch %d, want %d (-1: waiting)", i+1, got, want)
				}
			}
		})
	}
}
