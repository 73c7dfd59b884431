package seed

import (
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/scenario"
)

const scenarioFarm = `host h1 cores=16 mem=64G tags=fast
sub show general size=100 burst=200
folder f1 maxcores=3
limit lic max=2
job j show=show priority=5 folder=f1 maxcores=8
job k show=other
layer a job=j frames=3 cores=2 limits=lic threadable after=1h
layer b job=k frames=1 tags=fast|general
`

func TestFromScenario(t *testing.T) {
	sc, err := scenario.Parse("s.test", []byte(scenarioFarm))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	f, err := FromScenario(sc, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Allocations) != 1 || f.Allocations[0] != (Allocation{Name: "local.general", Tag: "general"}) {
		t.Errorf("allocations %+v", f.Allocations)
	}
	if h := f.Hosts[0]; h.Alloc != "local.general" || h.Cores != 1600 || h.Mem != 64*GB || h.ManualTags[0] != "fast" {
		t.Errorf("host %+v", h)
	}
	if len(f.Shows) != 2 || f.Shows[0].Name != "show" || !f.Shows[0].Managed || f.Shows[0].Subscriptions[0].Burst != 20000 ||
		f.Shows[1].Name != "other" || len(f.Shows[1].Subscriptions) != 0 {
		t.Errorf("shows %+v", f.Shows)
	}
	if len(f.Folders) != 1 || f.Folders[0] != (Folder{Show: "show", Name: "f1", MaxCores: 300, MaxGPUs: -1}) {
		t.Errorf("folders %+v", f.Folders)
	}
	j, k := f.Jobs[0], f.Jobs[1]
	if j.Folder != "f1" || j.Priority != 5 || j.MaxCores != 800 || j.MaxGPUs != unlimitedJobGPUs || k.Folder != "" ||
		k.MaxCores != unlimitedJobCores {
		t.Errorf("jobs %+v", f.Jobs)
	}
	if l := j.Layers[0]; l.Frames != 3 || l.Cores != 200 || !l.Threadable || l.Limits[0] != "lic" ||
		!l.StartAfter.Equal(now.Add(time.Hour)) || l.Tags != "general" {
		t.Errorf("layer %+v", l)
	}
}

func TestFromScenarioRefuses(t *testing.T) {
	for _, tc := range []struct{ name, extra, want string }{
		{"contested", "contested fast\n", "s.test:9: cannot seed: contested fast"},
		{"running", "running a h1\n", "s.test:9: cannot seed: running a h1"},
		{"busy host", "host h2 idle_cores=0\n", "s.test:9: cannot seed: host h2: idle capacity"},
		{"cloud host", "host h2 facility=cloud\n", "s.test:9: cannot seed: host h2: facility cloud"},
		{"upper-case host", "host H2\n", "s.test:9: cannot seed: host H2: the scenario tags"},
		{"used", "sub other general size=1 burst=1 used=1\n", "s.test:9: cannot seed: sub other general: used="},
		{"limit running", "limit l2 max=1 running=1\n", "s.test:9: cannot seed: limit l2"},
		{"job max 0", "job z show=show maxcores=0\n", "s.test:9: cannot seed: job z"},
		{"root cap", "folder show-root maxcores=1\njob z show=show\n", "s.test:9: cannot seed: folder show-root"},
		{"folder of two shows", "job z show=other folder=f1\n", "s.test:9: cannot seed: job z: folder f1"},
		{"undeclared limit", "layer c job=j limits=nolic\n", "s.test:9: cannot seed: layer c: limit nolic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := scenario.Parse("s.test", []byte(scenarioFarm+tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			_, err = FromScenario(sc, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
