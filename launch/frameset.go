package launch

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
)

// maxChunkFrames bounds the frames one chunk may hold, so that a corrupt
// chunk size cannot make building a RunFrame walk billions of frames.
const maxChunkFrames = 1 << 20

// frameSet is a parsed OpenCue frame set (layer.str_range): comma-separated
// sections, each one of
//
//	N         one frame
//	A-B       A to B, downwards when B < A
//	A-BxS     every S-th frame from A (S < 0 runs downwards)
//	A-ByS     the frames of A-B that A-BxS leaves out
//	A-B:S     every frame of A-B, ordered as passes with steps S, S/2, ... 1,
//	          each pass starting one frame further on and adding only new frames
//
// Frames keep the order of the spec and are not de-duplicated across
// sections, as in Cuebot. A frameSet never materialises its frames: layers
// with huge ranges and big chunks stay cheap.
type frameSet struct {
	sections []section
	n        int64
}

// progression is the arithmetic sequence start, start+step, ... up to end
// inclusive; step is never 0.
type progression struct{ start, end, step int64 }

func (p progression) contains(f int64) bool {
	if p.step > 0 && (f < p.start || f > p.end) || p.step < 0 && (f > p.start || f < p.end) {
		return false
	}
	return (f-p.start)%p.step == 0
}

func (p progression) count() int64 {
	d := p.end - p.start
	if p.step > 0 && d < 0 || p.step < 0 && d > 0 {
		return 0
	}
	return d/p.step + 1
}

// section is one comma-separated part of a spec: the union, in order, of its
// passes (one unless interleaved), less the frames of hole when inverted.
type section struct {
	passes   []progression
	inverted bool
	hole     progression
	n        int64
}

// emits reports whether pass k of s yields f (f is in pass k).
func (s *section) emits(k int, f int64) bool {
	if s.inverted && s.hole.contains(f) {
		return false
	}
	for _, p := range s.passes[:k] {
		if p.contains(f) {
			return false
		}
	}
	return true
}

// walk yields the section's frames in order, starting at frame from (which
// must be one of them) when fromSet, else at the beginning. It returns false
// when yield asked to stop.
func (s *section) walk(from int64, fromSet bool, yield func(int64) bool) bool {
	first := 0
	if fromSet {
		first = -1
		for k, p := range s.passes {
			if p.contains(from) && s.emits(k, from) {
				first = k
				break
			}
		}
		if first < 0 {
			return true
		}
	}
	for k := first; k < len(s.passes); k++ {
		p := s.passes[k]
		f := p.start
		if fromSet && k == first {
			f = from
		}
		for ; p.step > 0 && f <= p.end || p.step < 0 && f >= p.end; f += p.step {
			if s.emits(k, f) && !yield(f) {
				return false
			}
		}
	}
	return true
}

func (s *section) contains(f int64) bool {
	for k, p := range s.passes {
		if p.contains(f) {
			return s.emits(k, f)
		}
	}
	return false
}

// parseFrameSet parses an OpenCue frame set. Frame numbers must fit in 32
// bits; a step of 0, a step whose sign runs away from the end, or a set
// without any frame is an error.
func parseFrameSet(spec string) (frameSet, error) {
	var fs frameSet
	for part := range strings.SplitSeq(spec, ",") {
		s, err := parseSection(strings.TrimSpace(part))
		if err != nil {
			return frameSet{}, fmt.Errorf("frame set %q: %w", spec, err)
		}
		fs.sections = append(fs.sections, s)
		fs.n += s.n
	}
	if fs.n == 0 {
		return frameSet{}, fmt.Errorf("frame set %q: no frames", spec)
	}
	return fs, nil
}

func parseSection(s string) (section, error) {
	if s == "" {
		return section{}, errors.New("empty section")
	}
	start, rest, err := parseFrameNumber(s)
	if err != nil {
		return section{}, fmt.Errorf("section %q: %w", s, err)
	}
	if rest == "" {
		return section{passes: []progression{{start, start, 1}}, n: 1}, nil
	}
	if rest[0] != '-' {
		return section{}, fmt.Errorf("section %q: want '-' after the first frame", s)
	}
	end, rest, err := parseFrameNumber(rest[1:])
	if err != nil {
		return section{}, fmt.Errorf("section %q: %w", s, err)
	}
	if rest == "" {
		step := int64(1)
		if end < start {
			step = -1
		}
		p := progression{start, end, step}
		return section{passes: []progression{p}, n: p.count()}, nil
	}
	kind := rest[0]
	if kind != 'x' && kind != 'y' && kind != ':' {
		return section{}, fmt.Errorf("section %q: want x, y or : before the step", s)
	}
	step, rest, err := parseFrameNumber(rest[1:])
	if err != nil || rest != "" {
		return section{}, fmt.Errorf("section %q: bad step", s)
	}
	switch {
	case step == 0:
		return section{}, fmt.Errorf("section %q: step 0", s)
	case step > 1 && end < start:
		return section{}, fmt.Errorf("section %q: end before start with a positive step", s)
	case step < 0 && end >= start:
		return section{}, fmt.Errorf("section %q: end not before start with a negative step", s)
	}
	// A step of 1 with end < start is legal and empty, as in Cuebot.
	unit := int64(1)
	if step < 0 {
		unit = -1
	}
	switch kind {
	case 'x':
		p := progression{start, end, step}
		return section{passes: []progression{p}, n: p.count()}, nil
	case 'y':
		full := progression{start, end, unit}
		hole := progression{start, end, step}
		return section{passes: []progression{full}, inverted: true, hole: hole,
			n: full.count() - hole.count()}, nil
	default: // ':'
		var passes []progression
		for st, i := step, int64(0); st != 0; st, i = st/2, i+1 {
			passes = append(passes, progression{start + i*unit, end, st})
		}
		// The passes cover every frame from start to end: pass k yields
		// start+k*unit and the last one (step ±1) the rest.
		return section{passes: passes, n: progression{start, end, unit}.count()}, nil
	}
}

// parseFrameNumber reads an optional '-' and decimal digits from the front of
// s, returning the number and what follows.
func parseFrameNumber(s string) (int64, string, error) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i {
		return 0, "", errors.New("want a frame number")
	}
	v, err := strconv.ParseInt(s[:j], 10, 32)
	if err != nil {
		return 0, "", fmt.Errorf("frame number %q out of range", s[:j])
	}
	return v, s[j:], nil
}

// Len is the number of frames in the set.
func (fs frameSet) Len() int64 { return fs.n }

// All yields the set's frames in order.
func (fs frameSet) All() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range fs.sections {
			if !fs.sections[i].walk(0, false, func(f int64) bool { return yield(int(f)) }) {
				return
			}
		}
	}
}

// Chunk returns the chunk of a chunked layer that starts at frame: the frame
// and the frames that follow it in the set, size in all (fewer at the end of
// the set). The frame's first occurrence counts. A size below 1 means 1.
func (fs frameSet) Chunk(frame, size int) ([]int, error) {
	if size < 1 {
		size = 1
	}
	if size > maxChunkFrames {
		return nil, fmt.Errorf("chunk of %d frames is over the limit of %d", size, maxChunkFrames)
	}
	if frame < math.MinInt32 || frame > math.MaxInt32 {
		return nil, fmt.Errorf("frame %d is not in the frame set", frame)
	}
	first := -1
	for i := range fs.sections {
		if fs.sections[i].contains(int64(frame)) {
			first = i
			break
		}
	}
	if first < 0 {
		return nil, fmt.Errorf("frame %d is not in the frame set", frame)
	}
	out := make([]int, 0, min(int64(size), fs.n))
	collect := func(f int64) bool {
		out = append(out, int(f))
		return len(out) < size
	}
	if fs.sections[first].walk(int64(frame), true, collect) {
		for i := first + 1; i < len(fs.sections); i++ {
			if !fs.sections[i].walk(0, false, collect) {
				break
			}
		}
	}
	return out, nil
}

// formatFrames writes frames, in their order, as a compact frame set that
// parseFrameSet reads back to the same sequence: runs with a constant step
// become A-B or A-BxS, the rest single frames. Cuebot's #FRAMESPEC# follows
// the same idea, though its text may differ for the same frames.
func formatFrames(frames []int) string {
	var b strings.Builder
	for i := 0; i < len(frames); {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		j := i
		var step int
		if i+1 < len(frames) {
			step = frames[i+1] - frames[i]
			for j+1 < len(frames) && frames[j+1]-frames[j] == step {
				j++
			}
		}
		// A repeated frame, or a pair that is not adjacent, reads better as
		// single frames; the second may start the next run.
		if j == i || step == 0 || j == i+1 && step != 1 && step != -1 {
			b.WriteString(strconv.Itoa(frames[i]))
			i++
			continue
		}
		b.WriteString(strconv.Itoa(frames[i]))
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(frames[j]))
		if step != 1 && step != -1 {
			b.WriteByte('x')
			b.WriteString(strconv.Itoa(step))
		}
		i = j + 1
	}
	return b.String()
}
