package scenario

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
)

const farm = `host h1 cores=16 mem=64G
sub show general size=100 burst=100
job j show=show
layer a job=j frames=2
`

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"unknown directive", farm + "hots h2\n", 5, `unknown directive "hots"`},
		{"bad ago", farm + "ran a h1 ago=soon\n", 5, `ago="soon"`},
		{"ran on an unknown host", farm + "ran a h9\n", 5, `unknown host "h9"`},
		{"bad size", farm + "host h2 mem=64X\n", 5, `mem="64X"`},
		{"bad size suffix only", "host h2 mem=G\n", 1, `mem="G"`},
		{"bad cores", "host h2 cores=many\n", 1, `cores="many"`},
		{"unknown layer in expect", farm + "expect placed b = 1\n", 5, `unknown layer "b"`},
		{"unknown layer in wait", farm + "\n\nexpect wait nope cap\n", 7, `unknown layer "nope"`},
		{"unknown host in expect on", farm + "expect on h9 a = 1\n", 5, `unknown host "h9"`},
		{"unknown subscription", farm + "expect sub show other = 0\n", 5, `unknown sub "show other"`},
		{"unknown reason", farm + "expect wait a full\n", 5, `unknown reason "full"`},
		{"bad operator", farm + "expect placed a == 1\n", 5, `operator "=="`},
		{"malformed expect", farm + "expect placed a\n", 5, "malformed"},
		{"unknown key", "host h2 cpus=16\n", 1, `unknown key "cpus"`},
		{"extra word", "host h2 h3\n", 1, `unexpected word "h3"`},
		{"missing name", "host\n", 1, "host needs 1 name(s)"},
		{"unknown job", "layer a job=nope\n", 1, `unknown job "nope"`},
		{"job without show", "job j\n", 1, "needs show="},
		{"twice", farm + "host h1\n", 5, "host h1 declared twice (first on line 1)"},
		{"bad mode", "host h2 mode=some\n", 1, `mode "some"`},
		{"bad temp", "host h2 temp=100G\n", 1, "temp wants FREE/TOTAL"},
		{"bad after", farm + "layer b job=j after=soon\n", 5, `after="soon"`},
		{"too many frames", farm + "layer b job=j frames=2000000000\n", 5, "frames="},
		{"negative frames", farm + "layer b job=j frames=-1\n", 5, "frames="},
		{"no rounds", "options rounds=0\n", 1, "rounds="},
		{"bad policy", "options policy=worst\n", 1, `policy "worst"`},
		{"options twice", "options\noptions seed=2\n", 2, "options given twice"},
		{"running unknown host", farm + "running a h9\n", 5, `unknown host "h9"`},
		{"comment does not hide errors", "# host\nhost h1 # fine\nfolder\n", 3, "folder needs 1 name(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.test", []byte(tc.src))
			if err == nil {
				t.Fatalf("parsed, want an error with %q", tc.want)
			}
			prefix := "x.test:" + strconv.Itoa(tc.line) + ":"
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q... with %q", err, prefix, tc.want)
			}
		})
	}
}

func TestParseModel(t *testing.T) {
	src := farm + `host g1 cores=8.5 mem=512M gpus=2 gpumem=16G idle_cores=4 alloc=gpu tags=Fast,ssd mode=variable temp=1G/2G
folder f1 maxcores=3
job j2 show=show folder=f1 priority=5 maxcores=2 os=windows
limit lic max=3 running=1
layer b job=j2 frames=3 cores=0.5 tags=gpu|fast threadable services=a,b limits=lic after=1h
contested fast
running b g1 n=2
options policy=epvm order=strict seed=7 max=5 selfish=a allocs=gpu rounds=3 finish=1 # comment
expect on g1 b >= 1
expect wait b start-after 2026-01-01T01:00:00Z
`
	sc, err := Parse("m.test", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Hosts) != 2 || len(sc.Layers) != 2 || len(sc.Expects) != 2 || sc.Options.Line != 12 {
		t.Fatalf("model %+v", sc)
	}
	h := sc.Hosts[1]
	if h.Cores != 850 || h.Mem != 512*1024 || h.IdleCores != 400 || h.IdleMem != h.Mem || h.MemFree != h.Mem ||
		h.TempFree != gb || h.TempTotal != 2*gb || h.Mode != match.ThreadVariable || h.Tags[0] != "fast" {
		t.Errorf("host %+v", h)
	}
	in := sc.Inputs()
	if got := in.Hosts[1].Tags; strings.Join(got, ",") != "fast,g1,gpu,ssd" {
		t.Errorf("host tags %v", got)
	}
	l := in.Layers[1]
	if l.Min.Cores != 50 || l.JobID != "j2" || l.FolderID != "f1" || l.ShowID != "show" || l.Priority != 5 ||
		l.OS != "windows" || !l.Threadable || len(l.Frames) != 3 || l.Frames[2].Name != "0003-b" ||
		!l.StartAfter.Equal(Now.Add(time.Hour)) {
		t.Errorf("layer %+v", l)
	}
	if in.Layers[0].FolderID != "show-root" || in.Caps.Jobs["j"].MaxCores != match.NoMax {
		t.Errorf("defaults: folder %s, job cap %+v", in.Layers[0].FolderID, in.Caps.Jobs["j"])
	}
	if len(in.Running) != 2 || in.Running[0].Layer != l || in.Running[0].Host.ID != "g1" {
		t.Errorf("running %+v", in.Running)
	}
	if o := in.Options; o.Seed != 7 || o.Order != match.OrderStrict || o.MaxPlacements != 5 || !o.Now.Equal(Now) {
		t.Errorf("options %+v", o)
	}
}

// TestCheck reads expect lines against an outcome another runner filled.
func TestCheck(t *testing.T) {
	sc, err := Parse("c.test", []byte(farm+`expect placed a = 2
expect on h1 a >= 1
expect nowait a
expect sub show general = 2
expect wait a cap job
`))
	if err != nil {
		t.Fatal(err)
	}
	o := NewOutcome()
	o.Place("h1", "a")
	o.Place("h1", "a")
	errs := sc.Check(o)
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "c.test:8: expect sub show general = 2: this runner does not report") ||
		!strings.Contains(errs[1].Error(), "c.test:9: expect wait a cap job: no wait") {
		t.Errorf("errors %v", errs)
	}
	out, err := Run(sc)
	if err != nil {
		t.Fatal(err)
	}
	if errs := sc.Check(out); len(errs) != 1 || !strings.Contains(errs[0].Error(), "c.test:9:") {
		t.Errorf("after Run: %v\n%s", errs, out)
	}
}
