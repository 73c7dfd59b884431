package scenario

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cuesched/cuesched/match"
)

// maxCount bounds frames=, n= and rounds=, so a slip of the keyboard cannot
// ask for billions.
const maxCount = 100_000

const gb = 1048576 // KB

// ParseFile reads and parses the scenario file at path.
func ParseFile(path string) (*Scenario, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return Parse(path, src)
}

// Parse parses a scenario; name is how errors name it (file:line).
func Parse(name string, src []byte) (*Scenario, error) {
	p := &parser{sc: &Scenario{File: name, Options: defaultOptions()}, names: map[string]map[string]int{}}
	for i, text := range strings.Split(string(src), "\n") {
		line, _, _ := strings.Cut(text, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if err := p.directive(i+1, fields); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, i+1, err)
		}
	}
	if err := p.resolve(); err != nil {
		return nil, err
	}
	return p.sc, nil
}

func defaultOptions() Options {
	return Options{Policy: "bestfit", Order: "lottery", Seed: 1, Rounds: 1}
}

type parser struct {
	sc *Scenario
	// names are the lines that declared each name, by directive, so a name
	// is declared once and references resolve.
	names map[string]map[string]int
}

func (p *parser) directive(line int, fields []string) error {
	if fields[0] == "expect" {
		return p.expect(line, fields[1:])
	}
	a := splitArgs(fields[0], fields[1:])
	var err error
	switch fields[0] {
	case "host":
		err = p.host(line, a)
	case "sub":
		err = p.sub(line, a)
	case "folder":
		err = p.folder(line, a)
	case "job":
		err = p.job(line, a)
	case "limit":
		err = p.limit(line, a)
	case "layer":
		err = p.layer(line, a)
	case "contested":
		err = p.contested(line, a)
	case "running":
		err = p.running(line, a)
	case "ran":
		err = p.ran(line, a)
	case "reserve":
		err = p.reserve(line, a)
	case "options":
		err = p.options(line, a)
	default:
		return fmt.Errorf("unknown directive %q (host, sub, folder, job, limit, layer, contested, running, ran, reserve, options, expect)", fields[0])
	}
	if err != nil {
		return err
	}
	return a.finish()
}

// declare records a name of a kind, refusing a second declaration.
func (p *parser) declare(kind, name string, line int) error {
	m := p.names[kind]
	if m == nil {
		m = map[string]int{}
		p.names[kind] = m
	}
	if at, ok := m[name]; ok {
		return fmt.Errorf("%s %s declared twice (first on line %d)", kind, name, at)
	}
	m[name] = line
	return nil
}

func (p *parser) known(kind, name string) bool {
	_, ok := p.names[kind][name]
	return ok
}

func (p *parser) host(line int, a *args) error {
	if err := a.names(1); err != nil {
		return err
	}
	h := Host{Line: line, Name: a.pos[0]}
	h.Cores, h.Mem = a.cores("cores", 1600), a.size("mem", 64*gb)
	h.GPUs, h.GPUMem = a.num("gpus", 0), a.size("gpumem", 0)
	h.IdleCores, h.IdleMem = a.cores("idle_cores", h.Cores), a.size("idle_mem", h.Mem)
	h.Alloc, h.Facility, h.OS = a.str("alloc", "general"), a.str("facility", "local"), a.str("os", "linux")
	for _, t := range a.list("tags") {
		h.Tags = append(h.Tags, strings.ToLower(t))
	}
	h.MemFree = a.size("memfree", h.Mem)
	free, total, ok := strings.Cut(a.str("temp", "100G/100G"), "/")
	if !ok {
		return fmt.Errorf("temp wants FREE/TOTAL")
	}
	var err1, err2 error
	h.TempFree, err1 = parseSize(free)
	h.TempTotal, err2 = parseSize(total)
	if err := cmpErr(err1, err2); err != nil {
		return fmt.Errorf("temp: %w", err)
	}
	modes := map[string]match.ThreadMode{"auto": match.ThreadAuto, "all": match.ThreadAll, "variable": match.ThreadVariable}
	if h.Mode, ok = modes[a.str("mode", "auto")]; !ok {
		return fmt.Errorf("mode %q: want auto, all or variable", a.str("mode", ""))
	}
	if err := p.declare("host", h.Name, line); err != nil {
		return err
	}
	p.sc.Hosts = append(p.sc.Hosts, h)
	return nil
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) sub(line int, a *args) error {
	if err := a.names(2); err != nil {
		return err
	}
	s := Sub{Line: line, Show: a.pos[0], Alloc: a.pos[1], Size: a.cores("size", 0), Burst: a.cores("burst", 0), Used: a.cores("used", 0)}
	if err := p.declare("sub", s.Show+" "+s.Alloc, line); err != nil {
		return err
	}
	p.sc.Subs = append(p.sc.Subs, s)
	return nil
}

func (p *parser) folder(line int, a *args) error {
	if err := a.names(1); err != nil {
		return err
	}
	f := Folder{Line: line, Name: a.pos[0], MaxCores: a.cores("maxcores", -1), MaxGPUs: a.num("maxgpus", -1)}
	if err := p.declare("folder", f.Name, line); err != nil {
		return err
	}
	p.sc.Folders = append(p.sc.Folders, f)
	return nil
}

func (p *parser) job(line int, a *args) error {
	if err := a.names(1); err != nil {
		return err
	}
	j := Job{Line: line, Name: a.pos[0], Show: a.str("show", ""), OS: a.str("os", ""), Priority: a.num("priority", 1),
		// A job without a max has none (Cuebot's job guard has no unlimited value).
		MaxCores: a.cores("maxcores", match.NoMax), MaxGPUs: a.num("maxgpus", match.NoMax)}
	if j.Show == "" {
		return fmt.Errorf("job %s needs show=", j.Name)
	}
	j.Folder = a.str("folder", j.Show+"-root")
	if err := p.declare("job", j.Name, line); err != nil {
		return err
	}
	p.sc.Jobs = append(p.sc.Jobs, j)
	return nil
}

func (p *parser) limit(line int, a *args) error {
	if err := a.names(1); err != nil {
		return err
	}
	l := Limit{Line: line, Name: a.pos[0], Max: a.num("max", 0), Running: a.num("running", 0)}
	if err := p.declare("limit", l.Name, line); err != nil {
		return err
	}
	p.sc.Limits = append(p.sc.Limits, l)
	return nil
}

func (p *parser) layer(line int, a *args) error {
	if err := a.names(1, "threadable", "memfail"); err != nil {
		return err
	}
	l := Layer{Line: line, Name: a.pos[0], Job: a.str("job", ""), Frames: int(a.count("frames", 1, 0)),
		Cores: a.cores("cores", 100), Mem: a.size("mem", gb), GPUs: a.num("gpus", 0), GPUMem: a.size("gpumem", 0),
		Tags: a.str("tags", "general"), Threadable: slices.Contains(a.pos[1:], "threadable"),
		CoresMax: a.cores("coresmax", 0), Services: a.list("services"), Limits: a.list("limits"),
		Finished: a.count("finished", 0, 0), MaxRSS: a.size("maxrss", 0), MemFailed: slices.Contains(a.pos[1:], "memfail")}
	if !p.known("job", l.Job) {
		return fmt.Errorf("layer %s: unknown job %q (declare it above with job NAME show=SHOW)", l.Name, l.Job)
	}
	if s := a.str("after", ""); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("after=%q: %w", s, err)
		}
		l.After = d
	}
	for _, r := range []struct {
		key string
		d   *time.Duration
	}{{"run", &l.Runs.Layer}, {"jobrun", &l.Runs.Job}, {"servicerun", &l.Runs.Service}} {
		if s := a.str(r.key, ""); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return fmt.Errorf("%s=%q: want a duration above 0 such as 45m", r.key, s)
			}
			*r.d = d
		}
	}
	if err := p.declare("layer", l.Name, line); err != nil {
		return err
	}
	p.sc.Layers = append(p.sc.Layers, l)
	return nil
}

func (p *parser) contested(line int, a *args) error {
	if err := a.names(1); err != nil {
		return err
	}
	fac := a.str("facility", "local")
	for _, t := range strings.Split(a.pos[0], ",") {
		p.sc.Contested = append(p.sc.Contested, Contested{Line: line, Facility: fac, Tag: t})
	}
	return nil
}

func (p *parser) running(line int, a *args) error {
	if err := a.names(2); err != nil {
		return err
	}
	p.sc.Running = append(p.sc.Running, Running{Line: line, Layer: a.pos[0], Host: a.pos[1], N: int(a.count("n", 1, 0))})
	return nil
}

func (p *parser) ran(line int, a *args) error {
	if err := a.names(2); err != nil {
		return err
	}
	r := Ran{Line: line, Layer: a.pos[0], Host: a.pos[1], Ago: 5 * time.Minute}
	if s := a.str("ago", ""); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("ago=%q: want a duration of 0 or more such as 10m", s)
		}
		r.Ago = d
	}
	p.sc.Ran = append(p.sc.Ran, r)
	return nil
}

func (p *parser) reserve(line int, a *args) error {
	if err := a.names(2); err != nil {
		return err
	}
	r := Reserve{Line: line, Layer: a.pos[0], Host: a.pos[1]}
	if s := a.str("in", ""); s != "" && s != "unknown" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("in=%q: want a duration of 0 or more such as 30m, or unknown", s)
		}
		r.In, r.Known = d, true
	}
	p.sc.Reserves = append(p.sc.Reserves, r)
	return nil
}

func (p *parser) options(line int, a *args) error {
	if err := a.names(0, "locality"); err != nil {
		return err
	}
	if p.sc.Options.Line != 0 {
		return fmt.Errorf("options given twice (first on line %d)", p.sc.Options.Line)
	}
	o := Options{Line: line, Policy: a.str("policy", "bestfit"), Order: a.str("order", "lottery"), Seed: a.num("seed", 1),
		Max: int(a.count("max", 0, 0)), Selfish: a.list("selfish"), Allocs: a.list("allocs"),
		Rounds: int(a.count("rounds", 1, 1)), Finish: int(a.count("finish", 0, 0)),
		Warm: slices.Contains(a.pos, "locality"), Memory: a.list("memory")}
	if v, ok := a.value("headroom"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 10 {
			return fmt.Errorf("headroom=%q: want a fraction from 0 to 10 (0.2 adds 20%%)", v)
		}
		o.Headroom = f
	}
	if o.Policy != "bestfit" && o.Policy != "epvm" {
		return fmt.Errorf("policy %q: want bestfit or epvm", o.Policy)
	}
	if o.Order != "lottery" && o.Order != "strict" {
		return fmt.Errorf("order %q: want lottery or strict", o.Order)
	}
	p.sc.Options = o
	return nil
}

// resolve checks the references that may point forward: running lines and
// expectations name hosts, layers and subscriptions declared anywhere.
func (p *parser) resolve() error {
	sc := p.sc
	for _, r := range sc.Running {
		if err := p.refs(r.Line, [2]string{"layer", r.Layer}, [2]string{"host", r.Host}); err != nil {
			return fmt.Errorf("%s:%d: running: %w", sc.File, r.Line, err)
		}
	}
	for _, r := range sc.Ran {
		if err := p.refs(r.Line, [2]string{"layer", r.Layer}, [2]string{"host", r.Host}); err != nil {
			return fmt.Errorf("%s:%d: ran: %w", sc.File, r.Line, err)
		}
	}
	for _, r := range sc.Reserves {
		if err := p.refs(r.Line, [2]string{"layer", r.Layer}, [2]string{"host", r.Host}); err != nil {
			return fmt.Errorf("%s:%d: reserve: %w", sc.File, r.Line, err)
		}
	}
	for _, e := range sc.Expects {
		var err error
		switch e.Kind {
		case ExpectOn:
			err = p.refs(e.Line, [2]string{"host", e.Host}, [2]string{"layer", e.Layer})
		case ExpectSub:
			err = p.refs(e.Line, [2]string{"sub", e.Show + " " + e.Alloc})
		default:
			err = p.refs(e.Line, [2]string{"layer", e.Layer})
		}
		if err != nil {
			return fmt.Errorf("%s:%d: expect %s: %w", sc.File, e.Line, e.Source, err)
		}
	}
	return nil
}

func (p *parser) refs(line int, refs ...[2]string) error {
	for _, r := range refs {
		if !p.known(r[0], r[1]) {
			return fmt.Errorf("unknown %s %q", r[0], r[1])
		}
	}
	return nil
}

// reasons are the wait reasons an expect line may name.
var reasons = []match.Reason{match.ReasonCapacity, match.ReasonNoFit, match.ReasonCap, match.ReasonNoHost,
	match.ReasonStartAfter, match.ReasonDeferred}

func (p *parser) expect(line int, w []string) error {
	e := Expect{Line: line, Source: strings.Join(w, " ")}
	if len(w) > 0 {
		e.Kind = w[0]
	}
	var err error
	switch {
	case e.Kind == ExpectPlaced && len(w) == 4:
		e.Layer, e.Op = w[1], w[2]
		e.N, err = parseComparison(w[2], w[3])
	case e.Kind == ExpectOn && len(w) == 5:
		e.Host, e.Layer, e.Op = w[1], w[2], w[3]
		e.N, err = parseComparison(w[3], w[4])
	case e.Kind == ExpectSub && len(w) == 5:
		e.Show, e.Alloc, e.Op = w[1], w[2], w[3]
		e.N, err = parseComparison(w[3], w[4])
	case e.Kind == ExpectWait && len(w) >= 3:
		e.Layer, e.Reason, e.Text = w[1], w[2], strings.Join(w[3:], " ")
		if !slices.Contains(reasons, match.Reason(e.Reason)) {
			err = fmt.Errorf("unknown reason %q (want one of %v)", e.Reason, reasons)
		}
	case e.Kind == ExpectNoWait && len(w) == 2:
		e.Layer = w[1]
	default:
		return fmt.Errorf("expect %s: malformed: want placed LAYER OP N, on HOST LAYER OP N, sub SHOW ALLOC OP N, "+
			"wait LAYER REASON [TEXT] or nowait LAYER", e.Source)
	}
	if err != nil {
		return fmt.Errorf("expect %s: %w", e.Source, err)
	}
	p.sc.Expects = append(p.sc.Expects, e)
	return nil
}

func parseComparison(op, n string) (int64, error) {
	if op != "=" && op != ">=" && op != "<=" {
		return 0, fmt.Errorf("operator %q: want =, >= or <=", op)
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("count %q: %w", n, err)
	}
	return v, nil
}

// parseCores reads whole cores (decimals allowed) into core units; -1 stays
// -1 (unlimited).
func parseCores(v string) (int64, error) {
	if v == "-1" {
		return -1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(f) || math.Abs(f) > 1e15 {
		return 0, fmt.Errorf("out of range")
	}
	if f < 0 {
		return int64(f*100 - 0.5), nil
	}
	return int64(f*100 + 0.5), nil
}

// parseSize reads KB, or a number with a K, M or G suffix.
func parseSize(v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "G"):
		mult, v = gb, strings.TrimSuffix(v, "G")
	case strings.HasSuffix(v, "M"):
		mult, v = 1024, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "K"):
		v = strings.TrimSuffix(v, "K")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("out of range")
	}
	return n * mult, nil
}
