package workload

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxCount bounds counts (hosts, jobs, frames), so a slip of the keyboard
// cannot ask for billions.
const maxCount = 10_000_000

// ParseFile reads and parses a scenario file.
func ParseFile(path string) (*Workload, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return Parse(path, src)
}

// Parse parses a scenario; file names it in errors (file:line) and gives
// its name (the base name without .sim).
func Parse(file string, src []byte) (*Workload, error) {
	w := &Workload{File: file, Name: strings.TrimSuffix(filepath.Base(file), ".sim")}
	jobs := map[string]int{}
	for i, text := range strings.Split(string(src), "\n") {
		n := i + 1
		line, _, _ := strings.Cut(text, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if err := w.directive(n, fields, jobs); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Workload) directive(line int, f []string, jobs map[string]int) error {
	switch f[0] {
	case "about":
		w.About = strings.Join(f[1:], " ")
		return nil
	case "hosts":
		return w.hosts(line, f[1:])
	case "sub":
		return w.sub(line, f[1:])
	case "job":
		return w.job(line, f[1:], jobs)
	case "layer":
		return w.layer(line, f[1:], jobs)
	}
	return fmt.Errorf("unknown directive %q (about, hosts, sub, job, layer)", f[0])
}

// args are a directive's key=value words and flags, each taken once.
type args struct {
	kv    map[string]string
	flags map[string]bool
	err   error
}

func parseArgs(words []string, flags ...string) (*args, error) {
	a := &args{kv: map[string]string{}, flags: map[string]bool{}}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			if !slices.Contains(flags, w) {
				return nil, fmt.Errorf("unknown word %q (want key=value)", w)
			}
			a.flags[w] = true
			continue
		}
		if _, dup := a.kv[k]; dup {
			return nil, fmt.Errorf("%s given twice", k)
		}
		a.kv[k] = v
	}
	return a, nil
}

func (a *args) take(k string) (string, bool) {
	v, ok := a.kv[k]
	delete(a.kv, k)
	return v, ok
}

func (a *args) fail(k, v, want string) {
	if a.err == nil {
		a.err = fmt.Errorf("%s=%s: want %s", k, v, want)
	}
}

// done reports the first bad value, or a key the directive does not take.
func (a *args) done(keys string) error {
	if a.err != nil {
		return a.err
	}
	for k := range a.kv {
		return fmt.Errorf("unknown key %q (this directive takes %s)", k, keys)
	}
	return nil
}

func (a *args) str(k, def string) string {
	if v, ok := a.take(k); ok {
		return v
	}
	return def
}

func (a *args) count(k string, def, least int) int {
	v, ok := a.take(k)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least || n > maxCount {
		a.fail(k, v, fmt.Sprintf("a whole number from %d to %d", least, maxCount))
		return def
	}
	return n
}

// countRange is N or A-B.
func (a *args) countRange(k string, def int) [2]int {
	v, ok := a.take(k)
	if !ok {
		return [2]int{def, def}
	}
	lo, hi, isRange := strings.Cut(v, "-")
	if !isRange {
		hi = lo
	}
	x, err1 := strconv.Atoi(lo)
	y, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || x < 1 || y < x || y > maxCount {
		a.fail(k, v, "N or A-B, whole numbers from 1 with A <= B")
		return [2]int{def, def}
	}
	return [2]int{x, y}
}

func (a *args) fracRange(k string, def float64) [2]float64 {
	v, ok := a.take(k)
	if !ok {
		return [2]float64{def, def}
	}
	lo, hi, isRange := strings.Cut(v, "-")
	if !isRange {
		hi = lo
	}
	x, err1 := strconv.ParseFloat(lo, 64)
	y, err2 := strconv.ParseFloat(hi, 64)
	if err1 != nil || err2 != nil || !(x > 0) || y < x || y > 100 {
		a.fail(k, v, "a fraction or a range of fractions A-B, above 0 (1 is all of it)")
		return [2]float64{def, def}
	}
	return [2]float64{x, y}
}

func (a *args) duration(k string, def time.Duration) time.Duration {
	v, ok := a.take(k)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		a.fail(k, v, "a duration such as 90s, 10m or 2h")
		return def
	}
	return d
}

// durationRange is a duration, or a range of them A-B (B at least A): the
// range's top, or 0 for one duration.
func (a *args) durationRange(k string, def time.Duration) (time.Duration, time.Duration) {
	v, ok := a.take(k)
	if !ok {
		return def, 0
	}
	lo, hi, isRange := strings.Cut(v, "-")
	d, err := time.ParseDuration(lo)
	if err != nil || d < 0 {
		a.fail(k, v, "a duration such as 90s, 10m or 2h, or a range such as 30m-60m")
		return def, 0
	}
	if !isRange {
		return d, 0
	}
	top, err := time.ParseDuration(hi)
	if err != nil || top < d {
		a.fail(k, v, "a range of durations A-B with B at least A, such as 30m-60m")
		return def, 0
	}
	return d, top
}

func (a *args) number(k string, def, lo, hi float64) float64 {
	v, ok := a.take(k)
	if !ok {
		return def
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(x) || x < lo || x > hi {
		a.fail(k, v, fmt.Sprintf("a number from %g to %g", lo, hi))
		return def
	}
	return x
}

// list is comma-separated values read by read; def when absent.
func list[T any](a *args, k string, def []T, read func(string) (T, bool), want string) []T {
	v, ok := a.take(k)
	if !ok {
		return def
	}
	var out []T
	for _, s := range strings.Split(v, ",") {
		x, ok := read(strings.TrimSpace(s))
		if !ok {
			a.fail(k, v, want)
			return def
		}
		out = append(out, x)
	}
	return out
}

// cores reads whole cores (decimals allowed) as core units.
func cores(s string) (int64, bool) {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || x < 0 || x > 1e6 {
		return 0, false
	}
	return int64(math.Round(x * 100)), true
}

// size reads KB, or a K, M, G or T suffix.
func size(s string) (int64, bool) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "K"):
		s = strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		s, mult = strings.TrimSuffix(s, "M"), 1024
	case strings.HasSuffix(s, "G"):
		s, mult = strings.TrimSuffix(s, "G"), GB
	case strings.HasSuffix(s, "T"):
		s, mult = strings.TrimSuffix(s, "T"), 1024*GB
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || x < 0 || x*mult > 1<<50 {
		return 0, false
	}
	return int64(math.Round(x * mult)), true
}

func whole(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0 && n <= 1<<20
}

func name(s string) (string, bool) { return s, s != "" }

func tags(s string) ([]string, bool) {
	var out []string
	for _, t := range strings.Split(s, "|") {
		if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
			out = append(out, t)
		}
	}
	return out, len(out) > 0
}

const (
	wantCores = "whole cores (decimals allowed), comma-separated"
	wantSize  = "sizes in KB or with a K, M, G or T suffix, comma-separated"
)

func (w *Workload) hosts(line int, f []string) error {
	if len(f) == 0 {
		return fmt.Errorf("hosts needs a count: hosts N [cores=LIST] [mem=LIST] [alloc=LIST] [tags=LIST]")
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > maxCount {
		return fmt.Errorf("hosts %s: want a count from 1 to %d", f[0], maxCount)
	}
	a, err := parseArgs(f[1:])
	if err != nil {
		return err
	}
	g := HostGroup{N: n, Line: line}
	g.Cores = list(a, "cores", []int64{1600}, cores, wantCores)
	g.Mem = list(a, "mem", []int64{64 * GB}, size, wantSize)
	g.GPUs = list(a, "gpus", []int64{0}, whole, "whole GPUs, comma-separated")
	g.GPUMem = list(a, "gpumem", []int64{0}, size, wantSize)
	g.Allocs = list(a, "alloc", []string{"general"}, name, "allocation names, comma-separated")
	g.Tags = list(a, "tags", [][]string{nil}, tags, "tags, comma-separated choices of '|'-separated tags")
	g.Facility = a.str("facility", "local")
	if err := a.done("cores, mem, gpus, gpumem, alloc, tags, facility"); err != nil {
		return err
	}
	for _, c := range g.Cores {
		if c < 100 {
			return fmt.Errorf("cores: a host has at least one core")
		}
	}
	w.Hosts = append(w.Hosts, g)
	return nil
}

func (w *Workload) sub(line int, f []string) error {
	if len(f) < 2 {
		return fmt.Errorf("sub needs a show and an allocation: sub SHOW ALLOC size=N burst=N")
	}
	a, err := parseArgs(f[2:])
	if err != nil {
		return err
	}
	s := Sub{Show: f[0], Alloc: f[1], Line: line}
	s.Size = list(a, "size", []int64{0}, cores, wantCores)[0]
	s.Burst = list(a, "burst", []int64{s.Size}, cores, wantCores)[0]
	if err := a.done("size, burst"); err != nil {
		return err
	}
	w.Subs = append(w.Subs, s)
	return nil
}

func (w *Workload) job(line int, f []string, jobs map[string]int) error {
	if len(f) == 0 {
		return fmt.Errorf("job needs a name: job NAME show=SHOW [count=N]")
	}
	if _, dup := jobs[f[0]]; dup {
		return fmt.Errorf("job %s declared twice", f[0])
	}
	a, err := parseArgs(f[1:], "poisson")
	if err != nil {
		return err
	}
	j := JobTemplate{Name: f[0], Line: line, Poisson: a.flags["poisson"]}
	j.Show = a.str("show", "")
	j.Count = a.count("count", 1, 1)
	j.Start = a.duration("start", 0)
	j.Every = a.duration("every", 0)
	pr := a.countRange("priority", 1)
	j.Priority = [2]int64{int64(pr[0]), int64(pr[1])}
	if v, ok := a.take("maxcores"); ok {
		c, ok := cores(v)
		if !ok || c <= 0 {
			a.fail("maxcores", v, "whole cores above 0")
		}
		j.MaxCores = c
	}
	if err := a.done("show, count, start, every, poisson, priority, maxcores"); err != nil {
		return err
	}
	if j.Show == "" {
		return fmt.Errorf("job %s: show= is required", j.Name)
	}
	jobs[j.Name] = len(w.Jobs)
	w.Jobs = append(w.Jobs, j)
	return nil
}

func (w *Workload) layer(line int, f []string, jobs map[string]int) error {
	if len(f) == 0 {
		return fmt.Errorf("layer needs a name: layer NAME job=JOB [frames=N]")
	}
	a, err := parseArgs(f[1:], "threadable")
	if err != nil {
		return err
	}
	l := LayerTemplate{Name: f[0], Line: line, Threadable: a.flags["threadable"]}
	job := a.str("job", "")
	l.Frames = a.countRange("frames", 1)
	l.Cores = list(a, "cores", []int64{100}, cores, wantCores)
	l.Mem = list(a, "mem", []int64{GB}, size, wantSize)
	l.GPUs = list(a, "gpus", []int64{0}, whole, "whole GPUs")[0]
	l.GPUMem = list(a, "gpumem", []int64{0}, size, wantSize)[0]
	l.Used = a.fracRange("used", 1)
	l.Runtime, l.RuntimeMax = a.durationRange("runtime", 10*time.Minute)
	l.Spread = a.number("spread", 0, 0, 3)
	l.Setup = a.duration("setup", 0)
	l.Tags = list(a, "tags", [][]string{{"general"}}, tags, "tags, comma-separated choices of '|'-separated tags")
	l.After = a.str("after", "")
	if err := a.done("job, frames, cores, mem, gpus, gpumem, used, runtime, spread, setup, tags, after, threadable"); err != nil {
		return err
	}
	ji, ok := jobs[job]
	if !ok {
		return fmt.Errorf("layer %s: job=%q is not a job declared above", l.Name, job)
	}
	jt := &w.Jobs[ji]
	for _, o := range jt.Layers {
		if o.Name == l.Name {
			return fmt.Errorf("layer %s declared twice in job %s", l.Name, job)
		}
	}
	if l.After != "" && !slices.ContainsFunc(jt.Layers, func(o LayerTemplate) bool { return o.Name == l.After }) {
		return fmt.Errorf("layer %s: after=%q is not a layer of job %s declared above", l.Name, l.After, job)
	}
	if l.Runtime <= 0 {
		return fmt.Errorf("layer %s: runtime= must be above 0", l.Name)
	}
	for _, c := range l.Cores {
		if c <= 0 {
			return fmt.Errorf("layer %s: cores= must be above 0", l.Name)
		}
	}
	jt.Layers = append(jt.Layers, l)
	return nil
}

// check refuses what only the whole file shows: a sub or layer naming an
// allocation no host has, a job without layers, no hosts or jobs.
func (w *Workload) check() error {
	if len(w.Hosts) == 0 {
		return fmt.Errorf("%s: no hosts line", w.File)
	}
	if len(w.Jobs) == 0 {
		return fmt.Errorf("%s: no job line", w.File)
	}
	allocs := map[string]bool{}
	for _, g := range w.Hosts {
		for _, a := range g.Allocs {
			allocs[a] = true
		}
	}
	for _, s := range w.Subs {
		if !allocs[s.Alloc] {
			return fmt.Errorf("%s:%d: sub %s %s: no host is in allocation %s", w.File, s.Line, s.Show, s.Alloc, s.Alloc)
		}
	}
	for _, j := range w.Jobs {
		if len(j.Layers) == 0 {
			return fmt.Errorf("%s:%d: job %s has no layer", w.File, j.Line, j.Name)
		}
		if !slices.ContainsFunc(w.Subs, func(s Sub) bool { return s.Show == j.Show }) {
			return fmt.Errorf("%s:%d: job %s: show %s has no sub line (nothing could book)", w.File, j.Line, j.Name, j.Show)
		}
	}
	return nil
}
