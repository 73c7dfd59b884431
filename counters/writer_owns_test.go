package counters

import (
	"cmp"
	"maps"
	"slices"
	"testing"
)

// TestWriterOwnsHosts: the writer marks the rows of the procs released and
// the subscriptions moved on the hosts this instance owns, and retries a
// row whose cap changed only when a guard refused it.
func TestWriterOwnsHosts(t *testing.T) {
	t.Parallel()
	w := NewWriter(WriterConfig{Owns: func(host string) bool { return host == "h1" }})
	mine := Proc{Show: "s1", Alloc: "a1", Layer: "l1", Job: "j1", Folder: "f1", Dept: "d1"}
	theirs := mine
	theirs.Alloc = "a2"
	refused := Proc{Job: "j2"}
	w.refused[refused] = Refusal{Table: "job_resource", Key: "jr2", Row: refused}
	w.Changed(Changes{
		Released: []Released{{Proc: "p1", Host: "h1", Rows: mine}, {Proc: "p2", Host: "h2", Rows: theirs}},
		Moved:    []Moved{{Host: "h1", Show: "s1", Alloc: "a3"}, {Host: "h2", Show: "s1", Alloc: "a4"}},
		Capped:   []Proc{refused, {Job: "j3"}},
	})
	want := []Proc{{Job: "j2"}, mine, {Show: "s1", Alloc: "a3"}}
	got := slices.SortedFunc(maps.Keys(w.pending.procs), func(a, b Proc) int {
		return cmp.Or(cmp.Compare(a.Show, b.Show), cmp.Compare(a.Alloc, b.Alloc), cmp.Compare(a.Job, b.Job))
	})
	if !slices.Equal(got, want) {
		t.Errorf("marked %+v, want %+v", got, want)
	}
	if !maps.Equal(w.pending.firstProcs, map[string]struct{}{"p1": {}}) ||
		!maps.Equal(w.pending.firstHosts, map[string]struct{}{"h1": {}}) {
		t.Errorf("locks first procs %v and hosts %v, want p1 and h1", w.pending.firstProcs, w.pending.firstHosts)
	}
}
