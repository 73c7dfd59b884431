package match_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// Golden scenarios live in testdata/*.test, one directive a line, '#' to the
// end of a line is a comment. Names double as ids. Cores are whole cores
// (decimals allowed: 0.5 is 50 core units); sizes are KB or take a K, M or G
// suffix.
//
//	host NAME [cores=16] [mem=64G] [gpus=0] [gpumem=0] [idle_cores=cores]
//	     [idle_mem=mem] [alloc=general] [facility=local] [tags=t1,t2]
//	     [os=linux] [mode=auto|all|variable] [memfree=mem] [temp=100G/100G]
//	  A host carries its allocation's name and its own name as tags, plus tags.
//	sub SHOW ALLOC size=N burst=N [used=0]       subscription, in cores
//	folder NAME [maxcores=-1] [maxgpus=-1]      -1 is unlimited
//	job NAME show=SHOW [priority=1] [folder=F] [maxcores=-1] [maxgpus=-1] [os=]
//	limit NAME max=N [running=0]
//	layer NAME job=JOB [frames=1] [cores=1] [mem=1G] [gpus=0] [gpumem=0]
//	      [tags=general] [threadable] [coresmax=0] [services=a,b]
//	      [after=DURATION] [limits=l1,l2]
//	  tags are '|'-separated like layer.str_tags; after is relative to the
//	  scenario's clock (after=1h starts in an hour).
//	contested TAG[,TAG...] [facility=local]
//	  the tags are contested for every round (tag pressure, which package
//	  cache judges from waiting work and idle capacity): their hosts are
//	  left to other tags' layers until nothing else fits.
//	running LAYER HOST [n=1]
//	  n frames of LAYER already run on HOST at the layer's minimums before the
//	  first round (held resources and counted usage).
//	options [policy=bestfit|epvm] [order=lottery|strict] [seed=1] [max=0]
//	        [selfish=a,b] [allocs=a,b] [rounds=1] [finish=0]
//	  Each round plans the layers' remaining frames and commits every
//	  placement; between rounds the finish oldest running procs end (first
//	  the running lines in order, then placements in order). Round r uses
//	  seed+r.
//	expect placed LAYER OP N          frames placed over all rounds
//	expect on HOST LAYER OP N         of them on HOST
//	expect sub SHOW ALLOC OP N        subscription cores in use at the end
//	expect wait LAYER REASON [TEXT]   last round's wait; TEXT in its detail
//	expect nowait LAYER               no wait in the last round
//	  OP is one of = >= <=.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden scenarios in testdata")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			sc, err := parseScenario(f)
			if err != nil {
				t.Fatal(err)
			}
			sc.run(t)
		})
	}
}

var scenarioNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type scenario struct {
	hosts   []match.Host
	caps    *matchtest.Caps
	layers  []*match.Layer
	byName  map[string]*match.Layer
	jobs    map[string]*jobDef
	running []runDef
	opt     match.Options
	rounds  int
	finish  int
	expects []expectDef

	contested []tagAt // tags contested for every round
}

type tagAt struct{ facility, tag string }

type jobDef struct {
	show, folder, os string
	priority         int64
}

type runDef struct {
	layer, host string
	n           int
	line        int
}

type expectDef struct {
	line int
	args []string
}

func parseScenario(path string) (*scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := &scenario{
		caps:   matchtest.NewCaps(),
		byName: make(map[string]*match.Layer),
		jobs:   make(map[string]*jobDef),
		opt:    match.Options{Now: scenarioNow, Seed: 1},
		rounds: 1,
	}
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line, _, _ := strings.Cut(s.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if err := sc.directive(n, fields); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc, s.Err()
}

// kv splits positional words from key=value pairs.
func kv(fields []string) (pos []string, keys map[string]string) {
	keys = make(map[string]string)
	for _, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok {
			keys[k] = v
		} else {
			pos = append(pos, f)
		}
	}
	return pos, keys
}

type getter struct {
	keys map[string]string
	err  error
}

func (g *getter) str(k, def string) string {
	if v, ok := g.keys[k]; ok {
		return v
	}
	return def
}

func (g *getter) num(k string, def int64) int64 {
	v, ok := g.keys[k]
	if !ok || g.err != nil {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		g.err = fmt.Errorf("%s=%q: %w", k, v, err)
	}
	return n
}

// cores reads whole cores into core units (-1 stays -1: unlimited).
func (g *getter) cores(k string, def int64) int64 {
	v, ok := g.keys[k]
	if !ok || g.err != nil {
		return def
	}
	c, err := parseCores(v)
	if err != nil {
		g.err = fmt.Errorf("%s=%q: %w", k, v, err)
	}
	return c
}

func (g *getter) size(k string, def int64) int64 {
	v, ok := g.keys[k]
	if !ok || g.err != nil {
		return def
	}
	n, err := parseSize(v)
	if err != nil {
		g.err = fmt.Errorf("%s=%q: %w", k, v, err)
	}
	return n
}

func parseCores(v string) (int64, error) {
	if v == "-1" {
		return -1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	return int64(f*100 + 0.5*sign(f)), nil
}

func sign(f float64) float64 {
	if f < 0 {
		return -1
	}
	return 1
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "G"):
		mult, v = 1048576, strings.TrimSuffix(v, "G")
	case strings.HasSuffix(v, "M"):
		mult, v = 1024, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "K"):
		v = strings.TrimSuffix(v, "K")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n * mult, err
}

func (sc *scenario) directive(line int, fields []string) error {
	pos, keys := kv(fields[1:])
	g := &getter{keys: keys}
	need := func(n int) error {
		if len(pos) < n {
			return fmt.Errorf("%s needs %d names, got %q", fields[0], n, pos)
		}
		return nil
	}
	switch fields[0] {
	case "host":
		if err := need(1); err != nil {
			return err
		}
		name := pos[0]
		cores, mem := g.cores("cores", 1600), g.size("mem", 64*1048576)
		gpus, gpuMem := g.num("gpus", 0), g.size("gpumem", 0)
		alloc := g.str("alloc", "general")
		tags := []string{alloc, strings.ToLower(name)}
		if t := g.str("tags", ""); t != "" {
			for _, x := range strings.Split(t, ",") {
				tags = append(tags, strings.ToLower(x))
			}
		}
		slices.Sort(tags)
		tags = slices.Compact(tags)
		free, total, ok := strings.Cut(g.str("temp", "100G/100G"), "/")
		if !ok {
			return fmt.Errorf("temp wants FREE/TOTAL")
		}
		tempFree, err1 := parseSize(free)
		tempTotal, err2 := parseSize(total)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("temp: %v %v", err1, err2)
		}
		mode := map[string]match.ThreadMode{"auto": match.ThreadAuto, "all": match.ThreadAll, "variable": match.ThreadVariable}
		m, ok := mode[g.str("mode", "auto")]
		if !ok {
			return fmt.Errorf("mode %q", g.str("mode", ""))
		}
		sc.hosts = append(sc.hosts, match.Host{
			ID: name, Name: name, Facility: g.str("facility", "local"), Alloc: alloc,
			OS: g.str("os", "linux"), ThreadMode: m, Tags: tags,
			Total:   match.Resources{Cores: cores, Mem: mem, GPUs: gpus, GPUMem: gpuMem},
			Idle:    match.Resources{Cores: g.cores("idle_cores", cores), Mem: g.size("idle_mem", mem), GPUs: gpus, GPUMem: gpuMem},
			MemFree: g.size("memfree", mem), TempFree: tempFree, TempTotal: tempTotal,
		})
	case "sub":
		if err := need(2); err != nil {
			return err
		}
		sc.caps.Subs[matchtest.SubKey{Show: pos[0], Alloc: pos[1]}] = match.Subscription{
			Size: g.cores("size", 0), Burst: g.cores("burst", 0), Cores: g.cores("used", 0),
		}
	case "folder":
		if err := need(1); err != nil {
			return err
		}
		sc.caps.Folders[pos[0]] = match.Cap{MaxCores: g.cores("maxcores", -1), MaxGPUs: g.num("maxgpus", -1)}
	case "job":
		if err := need(1); err != nil {
			return err
		}
		show := g.str("show", "")
		if show == "" {
			return fmt.Errorf("job %s needs show=", pos[0])
		}
		sc.jobs[pos[0]] = &jobDef{show: show, folder: g.str("folder", show+"-root"), os: g.str("os", ""), priority: g.num("priority", 1)}
		// A job without a max has none (Cuebot's job guard has no unlimited value).
		sc.caps.Jobs[pos[0]] = match.Cap{MaxCores: g.cores("maxcores", match.NoMax), MaxGPUs: g.num("maxgpus", match.NoMax)}
	case "limit":
		if err := need(1); err != nil {
			return err
		}
		sc.caps.Limits[pos[0]] = match.Limit{Max: g.num("max", 0), Running: g.num("running", 0)}
	case "layer":
		if err := need(1); err != nil {
			return err
		}
		j := sc.jobs[g.str("job", "")]
		if j == nil {
			return fmt.Errorf("layer %s: unknown job %q", pos[0], g.str("job", ""))
		}
		l := &match.Layer{
			ID: pos[0], Name: pos[0], JobID: g.str("job", ""), JobName: g.str("job", ""),
			ShowID: j.show, FolderID: j.folder, Facility: "local", Priority: j.priority, OS: j.os,
			Tags: match.ParseTags(g.str("tags", "general")),
			Min: match.Resources{Cores: g.cores("cores", 100), Mem: g.size("mem", 1048576),
				GPUs: g.num("gpus", 0), GPUMem: g.size("gpumem", 0)},
			CoresMax:   g.cores("coresmax", 0),
			Threadable: slices.Contains(pos, "threadable"),
		}
		if s := g.str("services", ""); s != "" {
			l.Services = strings.Split(s, ",")
		}
		if s := g.str("limits", ""); s != "" {
			l.Limits = strings.Split(s, ",")
		}
		if a := g.str("after", ""); a != "" {
			d, err := time.ParseDuration(a)
			if err != nil {
				return err
			}
			l.StartAfter = scenarioNow.Add(d)
		}
		for i := range g.num("frames", 1) {
			l.Frames = append(l.Frames, match.Frame{ID: fmt.Sprintf("%s/%d", pos[0], i+1), Name: fmt.Sprintf("%04d-%s", i+1, pos[0]), Number: i + 1})
		}
		sc.layers = append(sc.layers, l)
		sc.byName[l.ID] = l
	case "contested":
		if err := need(1); err != nil {
			return err
		}
		for _, t := range strings.Split(pos[0], ",") {
			sc.contested = append(sc.contested, tagAt{g.str("facility", "local"), t})
		}
	case "running":
		if err := need(2); err != nil {
			return err
		}
		sc.running = append(sc.running, runDef{layer: pos[0], host: pos[1], n: int(g.num("n", 1)), line: line})
	case "options":
		switch g.str("policy", "bestfit") {
		case "bestfit":
			sc.opt.Policy = match.BestFit{}
		case "epvm":
			sc.opt.Policy = match.NewEPVM(0, 0)
		default:
			return fmt.Errorf("policy %q", g.str("policy", ""))
		}
		switch g.str("order", "lottery") {
		case "lottery":
			sc.opt.Order = match.OrderLottery
		case "strict":
			sc.opt.Order = match.OrderStrict
		default:
			return fmt.Errorf("order %q", g.str("order", ""))
		}
		sc.opt.Seed = g.num("seed", 1)
		sc.opt.MaxPlacements = int(g.num("max", 0))
		if s := g.str("selfish", ""); s != "" {
			sc.opt.SelfishServices = strings.Split(s, ",")
		}
		if s := g.str("allocs", ""); s != "" {
			sc.opt.Allocs = strings.Split(s, ",")
		}
		sc.rounds = int(g.num("rounds", 1))
		sc.finish = int(g.num("finish", 0))
	case "expect":
		if err := need(2); err != nil {
			return err
		}
		sc.expects = append(sc.expects, expectDef{line: line, args: fields[1:]})
	default:
		return fmt.Errorf("unknown directive %q", fields[0])
	}
	return g.err
}

type outcome struct {
	placed map[string]int        // layer
	on     map[[2]string]int     // host, layer
	waits  map[string]match.Wait // layer, last round
	caps   *matchtest.Caps
}

func (sc *scenario) run(t *testing.T) {
	hosts := matchtest.NewHosts(sc.hosts)
	for _, c := range sc.contested {
		hosts.SetContested(c.facility, c.tag, true)
	}
	var running []match.Placement // oldest first
	for _, r := range sc.running {
		l := sc.byName[r.layer]
		h, ok := hosts.Host(r.host)
		if l == nil || !ok {
			t.Fatalf("line %d: running %s %s: unknown layer or host", r.line, r.layer, r.host)
		}
		for range r.n {
			if !hosts.Take(h.ID, l.Min) {
				t.Fatalf("line %d: running %s does not fit on %s", r.line, r.layer, r.host)
			}
			p := match.Placement{Layer: l, Host: h, Size: l.Min}
			sc.caps.Apply(p)
			running = append(running, p)
		}
	}
	out := outcome{placed: map[string]int{}, on: map[[2]string]int{}, caps: sc.caps}
	for round := range sc.rounds {
		opt := sc.opt
		opt.Seed += int64(round)
		res := match.Plan(sc.layers, hosts, sc.caps, opt)
		took := map[*match.Layer]int{}
		for _, p := range res.Placements {
			if want := p.Layer.Frames[took[p.Layer]]; p.Frame != want {
				t.Fatalf("round %d: layer %s placed frame %s out of order (want %s)", round, p.Layer.ID, p.Frame.ID, want.ID)
			}
			took[p.Layer]++
			sc.caps.Apply(p)
			running = append(running, p)
			out.placed[p.Layer.ID]++
			out.on[[2]string{p.Host.ID, p.Layer.ID}]++
		}
		for l, n := range took {
			l.Frames = l.Frames[n:]
		}
		out.waits = map[string]match.Wait{}
		for _, w := range res.Waits {
			out.waits[w.Layer.ID] = w
		}
		if round < sc.rounds-1 {
			n := min(sc.finish, len(running))
			for _, p := range running[:n] {
				hosts.Return(p.Host.ID, p.Size)
				sc.caps.Release(p)
			}
			running = running[n:]
		}
	}
	for _, e := range sc.expects {
		if err := out.check(e.args); err != nil {
			t.Errorf("line %d: expect %s: %v", e.line, strings.Join(e.args, " "), err)
		}
	}
	if t.Failed() {
		for _, w := range out.waits {
			t.Logf("wait %s: %s (%s)", w.Layer.ID, w.Reason, w.Detail)
		}
		for k, n := range out.on {
			t.Logf("on %s %s = %d", k[0], k[1], n)
		}
	}
}

func compare(got int64, op, want string) error {
	w, err := strconv.ParseInt(want, 10, 64)
	if err != nil {
		return err
	}
	ok := false
	switch op {
	case "=":
		ok = got == w
	case ">=":
		ok = got >= w
	case "<=":
		ok = got <= w
	default:
		return fmt.Errorf("operator %q", op)
	}
	if !ok {
		return fmt.Errorf("got %d", got)
	}
	return nil
}

func (o *outcome) check(a []string) error {
	switch {
	case a[0] == "placed" && len(a) == 4:
		return compare(int64(o.placed[a[1]]), a[2], a[3])
	case a[0] == "on" && len(a) == 5:
		return compare(int64(o.on[[2]string{a[1], a[2]}]), a[3], a[4])
	case a[0] == "sub" && len(a) == 5:
		s, ok := o.caps.Subscription(a[1], a[2])
		if !ok {
			return fmt.Errorf("no subscription")
		}
		// Compared in whole cores.
		if s.Cores%100 != 0 {
			return fmt.Errorf("got %d core units, not whole cores", s.Cores)
		}
		return compare(s.Cores/100, a[3], a[4])
	case a[0] == "wait" && len(a) >= 3:
		w, ok := o.waits[a[1]]
		if !ok {
			return fmt.Errorf("no wait")
		}
		if string(w.Reason) != a[2] {
			return fmt.Errorf("reason %s (%s)", w.Reason, w.Detail)
		}
		if text := strings.Join(a[3:], " "); !strings.Contains(w.Detail, text) {
			return fmt.Errorf("detail %q lacks %q", w.Detail, text)
		}
		return nil
	case a[0] == "nowait" && len(a) == 2:
		if w, ok := o.waits[a[1]]; ok {
			return fmt.Errorf("waits: %s (%s)", w.Reason, w.Detail)
		}
		return nil
	}
	return fmt.Errorf("malformed")
}
