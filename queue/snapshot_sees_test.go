package queue

import (
	"strconv"
	"testing"
)

func TestSnapshotSees(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		snap string
		xids []uint32
		want bool
	}{
		{"725:725:", []uint32{724}, true},
		// The committing session has not left the proc array: latest
		// completed is still below it, so it is at xmax.
		{"725:725:", []uint32{725}, false},
		{"700:730:705,725", []uint32{725}, false},
		{"700:730:705,725", []uint32{706, 724}, true},
		{"700:730:705,725", []uint32{706, 705}, false},
		{"700:730:", []uint32{731}, false},
		{"700:730:", nil, true},
		// xid8s of epoch 1: only the low 32 bits travel in the stream.
		{"4294967396:4294967400:4294967398", []uint32{99}, true},
		{"4294967396:4294967400:4294967398", []uint32{102}, false},
		{"4294967396:4294967400:4294967398", []uint32{104}, false},
		// Wraparound: xmax just past an epoch boundary, xid just before it.
		{"4294967290:4294967298:", []uint32{4294967295}, true},
		{"4294967290:4294967298:", []uint32{2}, false},
		{"4294967290:4294967298:", []uint32{1}, true},
	} {
		got, err := snapshotSees(tc.snap, tc.xids)
		if err != nil || got != tc.want {
			t.Errorf("snapshotSees(%q, %v) = %v, %v; want %v", tc.snap, tc.xids, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "1:2", "1:x:", "1:5:3,,4", "1:5:y", "1:2:3:4"} {
		if _, err := snapshotSees(bad, []uint32{1}); err == nil {
			t.Errorf("snapshotSees(%q) gave no error", bad)
		}
	}
}

// Any text, however malformed, gives an answer or an error, never a panic,
// and a well-formed snapshot never sees what it lists in progress.
func FuzzSnapshotSees(f *testing.F) {
	f.Add("700:730:705,725", uint32(725))
	f.Add("725:725:", uint32(725))
	f.Add("4294967290:4294967298:", uint32(1))
	f.Fuzz(func(t *testing.T, snap string, xid uint32) {
		if _, err := snapshotSees(snap, []uint32{xid}); err != nil {
			return
		}
		sep := ","
		if snap[len(snap)-1] == ':' {
			sep = ""
		}
		withXid := snap + sep + strconv.FormatUint(uint64(xid), 10)
		if sees, _ := snapshotSees(withXid, []uint32{xid}); sees {
			t.Errorf("%q, which lists %d in progress, sees it", withXid, xid)
		}
	})
}
