package match

import (
	"fmt"
	"math"
	"slices"
)

// Memory from history (issue 15): a layer whose finished frames used much
// less memory than it asks is booked with what they used plus headroom.

// History is what a layer's frames have shown of their memory so far.
type History struct {
	// Finished is how many of its frames succeeded
	// (layer_stat.int_succeeded_count).
	Finished int64
	// MaxRSS is the most memory (KB) any of its frames used
	// (layer_mem.int_max_rss, which Cuebot raises from running frames' reports).
	MaxRSS int64
	// MemFailed says a frame of the layer was killed for its memory
	// (frame.int_exit_status 33): the layer is no longer trimmed.
	MemFailed bool
}

// Memory says which layers are booked with memory from history.
type Memory struct {
	// Shows are the show names it applies to; "*" is every show; empty
	// turns it off.
	Shows []string
	// Headroom is the share added to what the frames used (0.2: 20% more).
	Headroom float64
}

const (
	// MinFinished is how many frames of a layer must have finished before
	// their use says anything: fewer, and one light frame would trim the
	// layer for all of them.
	MinFinished = 3
	// MemFloor is Cuebot's smallest reservation (Dispatcher.MEM_RESERVED_MIN,
	// 256 MB in KB): a trimmed frame is booked with a whole number of them,
	// at least one. Rounding up to it keeps layers whose frames use alike
	// on one shape, so matching's per-shape memo (a shape that found no
	// host fails once a round) still holds with every layer trimmed by its
	// own history: booked to the KB, the simulator's memory-bound farm
	// spent about 1.5 times the CPU.
	MemFloor = 262144
)

// On reports whether the setting trims any show at all.
func (m Memory) On() bool { return len(m.Shows) > 0 }

// applies reports whether the layers of show are trimmed.
func (m Memory) applies(show string) bool {
	return slices.Contains(m.Shows, "*") || slices.Contains(m.Shows, show)
}

// MemoryChoice is the memory one frame of a layer is booked with, and why.
type MemoryChoice struct {
	Mem     int64 // KB
	Trimmed bool  // below the layer's request
	// Why says how Mem was chosen, for explain: the history it was trimmed
	// by, or why the request stands ("" when the setting is off for the show).
	Why string
}

// BookedMemory is the memory each frame of l is booked with under m: the
// layer's request, or, when its show is in m, at least MinFinished of its
// frames finished and none was killed for its memory, the most they used
// times (1 + headroom) rounded up to a multiple of MemFloor, and below the
// request (else the request).
// Cuebot raises a layer's request after a memory failure; that raised
// request is what a failed layer is booked with.
func BookedMemory(l *Layer, m Memory) MemoryChoice {
	req := l.Min.Mem
	c := MemoryChoice{Mem: req}
	h := l.History
	switch {
	case !m.On() || !m.applies(l.ShowName):
		return c
	case h.MemFailed:
		c.Why = "not trimmed: a frame of the layer was killed for its memory"
		return c
	case h.Finished < MinFinished:
		c.Why = fmt.Sprintf("not trimmed: %d of the %d finished frames needed", h.Finished, MinFinished)
		return c
	case h.MaxRSS <= 0:
		c.Why = "not trimmed: no memory use recorded for its finished frames"
		return c
	}
	head := math.Max(0, m.Headroom)
	want := float64(h.MaxRSS) * (1 + head)
	if want >= float64(req) || math.IsNaN(want) {
		c.Why = fmt.Sprintf("not trimmed: its %d finished frames used up to %s, with headroom at least the request",
			h.Finished, fmtKB(h.MaxRSS))
		return c
	}
	steps := max(1, math.Ceil(want/MemFloor))
	if steps*MemFloor >= float64(req) {
		c.Why = fmt.Sprintf("not trimmed: its %d finished frames used up to %s, with headroom in whole %s at least the request",
			h.Finished, fmtKB(h.MaxRSS), fmtKB(MemFloor))
		return c
	}
	mem := int64(steps) * MemFloor
	c.Mem, c.Trimmed = mem, true
	c.Why = fmt.Sprintf("trimmed from %s: its %d finished frames used at most %s", fmtKB(req), h.Finished, fmtKB(h.MaxRSS))
	return c
}

// fmtKB writes an amount of KB in the largest unit that keeps it readable.
func fmtKB(kb int64) string {
	if kb >= 1<<20 {
		return fmt.Sprintf("%.1f GB", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%d MB", kb>>10)
}

// sized is the layer as sizing and host feasibility see it: l itself, or a
// copy whose memory request is the trimmed one (the placement still names l).
func sized(l *Layer, m Memory) *Layer {
	c := BookedMemory(l, m)
	if !c.Trimmed {
		return l
	}
	t := *l
	t.Min.Mem = c.Mem
	return &t
}
