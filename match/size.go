package match

import "math"

// memStranded is Cuebot's MEM_STRANDED_THRESHHOLD (1.5 GB in KB): when a
// threadable frame would leave no more idle memory than this, the cores left
// beside it could not be used anyway, so the frame gets them all.
const memStranded = 1572864

// Size is the proc Cuebot's VirtualProc.build gives one frame of l on h,
// followed by the dispatcher's idle-cores check, as DESIGN.md states the
// rule; false when Cuebot would not book the pair. selfish says the layer
// runs one of the configured selfish services. Memory, GPUs and GPU memory are
// the layer's minimums; whether they fit is fitsIdle's question.
//
// Readings checked against OpenCue's VirtualProc.java and DispatchHost.java
// where DESIGN.md is terse: a request of 0 or below needs a fully idle host
// (canHandleNegativeCoresRequest); the span divides by the host's total whole
// cores, rounds half up (Math.round) and is capped by int_cores_max; the
// VARIABLE floor applies when the base is at most 200. Cuebot's
// strandedCores (cores a host report marks as stranded) has no column and is
// not modelled, and h.Idle.Mem is already the smaller of idle and reported
// free memory where Cuebot reads host.int_mem_idle alone.
func Size(h *Host, l *Layer, selfish bool) (Resources, bool) {
	if !sizeable(l.Min) {
		return Resources{}, false
	}
	size := l.Min
	req := l.Min.Cores
	switch {
	case req <= 0:
		// All of the host's cores (minus -req), so only a fully idle host.
		if h.Idle.Cores != h.Total.Cores {
			return Resources{}, false
		}
		size.Cores = h.Total.Cores + req
		if size.Cores <= 0 {
			return Resources{}, false
		}
	case req < 100:
		// Below one core the request is left as it is.
		if h.Idle.Cores < req {
			return Resources{}, false
		}
	default:
		if h.Idle.Cores < req {
			return Resources{}, false
		}
		c, ok := multiCore(h, l, req, selfish)
		if !ok {
			return Resources{}, false
		}
		size.Cores = c
	}
	// Last of all: a layer that cannot thread never holds more than one core.
	if !l.Threadable && size.Cores > 100 {
		size.Cores = 100
	}
	if size.Cores > maxCounted {
		return Resources{}, false // bad data: a host reporting more cores than a proc can hold
	}
	return size, true
}

// maxCounted is the most cores or GPUs one proc may hold: frame.int_cores,
// frame.int_gpus and the subscription, layer and folder counters are
// PostgreSQL integers (dispatch's re-check drops anything larger), as are
// Cuebot's own proc sizes.
const maxCounted = math.MaxInt32

// sizeable: no proc can reserve negative memory, GPUs or GPU memory (its
// release would leave the host with more idle than it has), nor more GPUs
// than a counter holds. The pending-layer queue skips such layers; the rule
// keeps any other caller of matching from placing them.
func sizeable(min Resources) bool {
	return min.Mem >= 0 && min.GPUMem >= 0 && min.GPUs >= 0 && min.GPUs <= maxCounted
}

// multiCore sizes a request of one core or more on a host with at least req
// idle, hence at least one whole idle core (Cuebot refuses a host with only a
// fraction of a core earlier, by the same test).
func multiCore(h *Host, l *Layer, req int64, selfish bool) (int64, bool) {
	whole := h.Idle.Cores / 100
	var c int64
	switch {
	case h.ThreadMode == ThreadAll:
		c = whole * 100
	case !l.Threadable:
		c = req
	case selfish:
		c = whole * 100
	case h.Idle.Mem-l.Min.Mem <= memStranded:
		c = whole * 100
	default:
		var ok bool
		if c, ok = coreSpan(h, l.Min.Mem, l.CoresMax); !ok {
			return 0, false
		}
	}
	if h.ThreadMode == ThreadVariable && l.Threadable && c <= 200 {
		if h.Idle.Cores < 200 {
			return 0, false // no threadable frame on one core of a VARIABLE host
		}
		c = 200
	}
	if c < 100 {
		c = 100
	}
	if c < req {
		c = req
	}
	if l.CoresMax > 0 && c > l.CoresMax {
		c = l.CoresMax
	}
	if c > h.Idle.Cores {
		if h.ThreadMode == ThreadVariable && l.Threadable && whole == 1 {
			return 0, false
		}
		c = whole * 100
	}
	return c, true
}

// coreSpan gives a threadable frame cores in proportion to its memory: one
// core per (idle memory / total whole cores), rounded half up, capped by
// coresMax when positive.
func coreSpan(h *Host, mem, coresMax int64) (int64, bool) {
	total := h.Total.Cores / 100
	if total <= 0 {
		return 0, false // bad data: Cuebot would divide by zero and not book
	}
	perCore := h.Idle.Mem / total
	if perCore <= 0 {
		return 0, false // bad data: unreachable with the stranded check passed
	}
	n := math.Floor(float64(mem)/float64(perCore) + 0.5)
	if n > math.MaxInt64/100 {
		n = math.MaxInt64 / 100 // bad data; the idle clamp brings it down
	}
	c := int64(n) * 100
	if coresMax > 0 && c > coresMax {
		c = coresMax
	}
	return c, true
}
