package match

import "math"

// Policy ranks the feasible hosts offered for one frame. Plan walks each of
// the layer's tag indexes in ascending (idle cores, idle memory, id) order,
// sizes the proc for every feasible host and offers the first Window() of
// them per index; the lowest Cost wins, ties going to the host earlier in
// index order (the tighter one).
//
// Whatever the policy, GPU hosts are kept for GPU work: a layer that asks no
// GPUs takes a host with GPUs only when no host without GPUs fits (Plan
// applies this before Cost).
type Policy interface {
	// Window is how many feasible hosts per tag index are offered per frame.
	Window() int
	// Cost scores placing a proc of size on h; lower is better.
	Cost(h *Host, size Resources) float64
}

// BestFit places each frame on the tightest host that fits: the first
// feasible host in ascending idle order, so small frames fill partly used and
// small hosts and large idle hosts stay free for wide frames. It is the
// default.
type BestFit struct{}

// Window offers only the first feasible host of each index.
func (BestFit) Window() int { return 1 }

// Cost is flat: the index order alone decides.
func (BestFit) Cost(*Host, Resources) float64 { return 0 }

// EPVM scores a placement by its opportunity cost in the manner of E-PVM
// (Amir et al., "An opportunity cost approach for job assignment in a
// scalable computing cluster", 2000): each resource r of a host costs
// base^(u_r), u_r its utilisation (1 - idle/total), and a placement costs what
// it adds to the sum over cores, memory, GPUs and GPU memory. The convex
// function makes a unit of a busy resource dearer than a unit of an idle one,
// so placements balance each resource across hosts instead of exhausting one
// of them while the others strand. Candidates are the first few feasible
// hosts in index order, so it chooses among the tighter hosts.
type EPVM struct {
	lnBase     float64
	candidates int
}

// NewEPVM returns an EPVM policy with the given base (> 1; 8 when not) and
// candidates per index (8 when < 1).
func NewEPVM(base float64, candidates int) *EPVM {
	if !(base > 1) || math.IsInf(base, 0) {
		base = 8
	}
	if candidates < 1 {
		candidates = 8
	}
	return &EPVM{lnBase: math.Log(base), candidates: candidates}
}

// Window is the number of candidates scored per index.
func (e *EPVM) Window() int { return e.candidates }

// Cost is the rise in sum(base^u) that size brings to h.
func (e *EPVM) Cost(h *Host, size Resources) float64 {
	return e.rise(h.Total.Cores, h.Idle.Cores, size.Cores) +
		e.rise(h.Total.Mem, h.Idle.Mem, size.Mem) +
		e.rise(h.Total.GPUs, h.Idle.GPUs, size.GPUs) +
		e.rise(h.Total.GPUMem, h.Idle.GPUMem, size.GPUMem)
}

func (e *EPVM) rise(total, idle, add int64) float64 {
	if total <= 0 || add <= 0 {
		return 0
	}
	u := float64(total-idle) / float64(total)
	v := u + float64(add)/float64(total)
	return math.Exp(e.lnBase*v) - math.Exp(e.lnBase*u)
}
