package launch

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
)

func baseSpec() launchSpec {
	uid := int32(1000)
	return launchSpec{
		ProcID: "proc-1",
		Job: jobInfo{
			ID: "job-1", Name: "show-shot-user_job", User: "user", LogDir: "/logs/job",
			Show: "show", Shot: "shot", UID: &uid, LokiURL: "http://loki:3100",
			Env: map[string]string{"A": "job", "B": "job", "CUE_RANGE": "from-job"},
		},
		Layer: layerInfo{
			ID: "layer-1", Name: "render", Command: "render -f #IFRAME# -z #ZFRAME#",
			Range: "1-10", ChunkSize: 1, Threadable: true, MemMin: 4194304,
			Env: map[string]string{"B": "layer", "C": "layer"},
		},
		Frame:     frameInfo{ID: "frame-7", Name: "0007-render", Number: 7},
		Host:      hostInfo{Name: "host-a", OS: "rhel9"},
		Reserved:  match.Resources{Cores: 400, Mem: 4194304, GPUs: 1, GPUMem: 262144},
		StartTime: time.UnixMilli(1700000000123),
	}
}

func TestBuildRunFrame(t *testing.T) {
	rf, err := buildRunFrame(baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ got, want any }{
		"resource_id":       {rf.ResourceId, "proc-1"},
		"job_id":            {rf.JobId, "job-1"},
		"job_name":          {rf.JobName, "show-shot-user_job"},
		"frame_id":          {rf.FrameId, "frame-7"},
		"frame_name":        {rf.FrameName, "0007-render"},
		"layer_id":          {rf.LayerId, "layer-1"},
		"command":           {rf.Command, "render -f 7 -z 0007"},
		"user_name":         {rf.UserName, "user"},
		"log_dir":           {rf.LogDir, "/logs/job"},
		"show":              {rf.Show, "show"},
		"shot":              {rf.Shot, "shot"},
		"start_time":        {rf.StartTime, int64(1700000000123)},
		"uid":               {rf.GetUid(), int32(1000)},
		"num_cores":         {rf.NumCores, int32(400)},
		"num_gpus":          {rf.NumGpus, int32(1)},
		"gid":               {rf.Gid, int32(0)},
		"ignore_nimby":      {rf.IgnoreNimby, false},
		"os":                {rf.Os, "rhel9"},
		"soft_memory_limit": {rf.SoftMemoryLimit, int64(6710886)},
		"hard_memory_limit": {rf.HardMemoryLimit, int64(8388608)},
		"loki_url":          {rf.LokiUrl, "http://loki:3100"},
		"pid":               {rf.Pid, int32(0)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}
	if rf.UidOptional == nil {
		t.Error("uid not set")
	}
	wantEnv := map[string]string{
		"A": "job", "B": "layer", "C": "layer",
		"CUE3": "1", "CUE_THREADS": "4", "CUE_MEMORY": "4194304", "CUE_GPUS": "1",
		"CUE_GPU_MEMORY": "262144", "CUE_LOG_PATH": "/logs/job", "CUE_RANGE": "1-10",
		"CUE_CHUNK": "1", "CUE_IFRAME": "7", "CUE_LAYER": "render", "CUE_JOB": "show-shot-user_job",
		"CUE_FRAME": "0007-render", "CUE_SHOW": "show", "CUE_SHOT": "shot", "CUE_USER": "user",
		"CUE_JOB_ID": "job-1", "CUE_LAYER_ID": "layer-1", "CUE_FRAME_ID": "frame-7",
		"CUE_THREADABLE": "1",
	}
	if !maps.Equal(rf.Environment, wantEnv) {
		t.Errorf("environment\n got %v\nwant %v", rf.Environment, wantEnv)
	}
	if n := len(wantEnv) - 3; n != cueVars {
		t.Errorf("cueVars = %d, the test names %d", cueVars, n)
	}
}

func TestBuildRunFrameCommand(t *testing.T) {
	all := "#ZFRAME#|#IFRAME#|#FRAME_START#|#FRAME_END#|#FRAME_CHUNK#|#LAYER#|#JOB#|#FRAMESPEC#|#FRAME#"
	for _, c := range []struct {
		name  string
		edit  func(*launchSpec)
		want  string
		chunk string // CUE_CHUNK
	}{
		{"single frame", func(s *launchSpec) {},
			"0007|7|7|7|1|render|show-shot-user_job|7|0007-render", "1"},
		{"chunk of 3", func(s *launchSpec) { s.Layer.ChunkSize = 3; s.Frame.Number = 4; s.Frame.Name = "0004-render" },
			"0004|4|4|6|3|render|show-shot-user_job|4-6|0004-render", "3"},
		{"chunk cut at the end", func(s *launchSpec) { s.Layer.ChunkSize = 5; s.Frame.Number = 7 },
			"0007|7|7|10|5|render|show-shot-user_job|7-10|0007-render", "5"},
		{"stepped chunk", func(s *launchSpec) { s.Layer.Range = "1-100x5"; s.Layer.ChunkSize = 3; s.Frame.Number = 11 },
			"0011|11|11|21|3|render|show-shot-user_job|11-21x5|0007-render", "3"},
		{"interleaved chunk", func(s *launchSpec) { s.Layer.Range = "1-10:5"; s.Layer.ChunkSize = 4; s.Frame.Number = 6 },
			"0006|6|6|8|4|render|show-shot-user_job|6,2,4,8|0007-render", "4"},
		{"negative frame", func(s *launchSpec) { s.Frame.Number = -5 },
			"-005|-5|-5|-5|1|render|show-shot-user_job|-5|0007-render", "1"},
		{"zero chunk size", func(s *launchSpec) { s.Layer.ChunkSize = 0 },
			"0007|7|7|7|0|render|show-shot-user_job|7|0007-render", "0"},
		{"values are not rescanned", func(s *launchSpec) { s.Layer.Name = "#JOB#" },
			"0007|7|7|7|1|#JOB#|show-shot-user_job|7|0007-render", "1"},
	} {
		s := baseSpec()
		s.Layer.Command = all
		c.edit(&s)
		rf, err := buildRunFrame(s)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if rf.Command != c.want {
			t.Errorf("%s: command %q, want %q", c.name, rf.Command, c.want)
		}
		if rf.Environment["CUE_CHUNK"] != c.chunk {
			t.Errorf("%s: CUE_CHUNK %q, want %q", c.name, rf.Environment["CUE_CHUNK"], c.chunk)
		}
	}
}

func TestBuildRunFrameFields(t *testing.T) {
	neg, zero := int32(-1), int32(0)
	for _, c := range []struct {
		name  string
		edit  func(*launchSpec)
		check func(t *testing.T, env map[string]string, uidSet bool, soft, hard int64)
	}{
		{"uid NULL", func(s *launchSpec) { s.Job.UID = nil },
			func(t *testing.T, _ map[string]string, uidSet bool, _, _ int64) {
				if uidSet {
					t.Error("uid set")
				}
			}},
		{"uid 0", func(s *launchSpec) { s.Job.UID = &zero },
			func(t *testing.T, _ map[string]string, uidSet bool, _, _ int64) {
				if uidSet {
					t.Error("uid set")
				}
			}},
		{"uid negative", func(s *launchSpec) { s.Job.UID = &neg },
			func(t *testing.T, _ map[string]string, uidSet bool, _, _ int64) {
				if uidSet {
					t.Error("uid set")
				}
			}},
		{"fractional cores", func(s *launchSpec) { s.Reserved.Cores = 50; s.Layer.Threadable = false },
			func(t *testing.T, env map[string]string, _ bool, _, _ int64) {
				if env["CUE_THREADS"] != "1" || env["CUE_THREADABLE"] != "0" {
					t.Errorf("CUE_THREADS %q CUE_THREADABLE %q", env["CUE_THREADS"], env["CUE_THREADABLE"])
				}
			}},
		{"memory limits", func(s *launchSpec) { s.Layer.MemMin = 1000001 },
			func(t *testing.T, _ map[string]string, _ bool, soft, hard int64) {
				if soft != 1600001 || hard != 2000002 {
					t.Errorf("soft %d hard %d", soft, hard)
				}
			}},
		{"no env", func(s *launchSpec) { s.Job.Env = nil; s.Layer.Env = nil },
			func(t *testing.T, env map[string]string, _ bool, _, _ int64) {
				if len(env) != cueVars {
					t.Errorf("%d variables, want %d", len(env), cueVars)
				}
			}},
	} {
		s := baseSpec()
		c.edit(&s)
		rf, err := buildRunFrame(s)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			c.check(t, rf.Environment, rf.UidOptional != nil, rf.SoftMemoryLimit, rf.HardMemoryLimit)
		})
	}
}

func TestBuildRunFrameErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*launchSpec)
		want string
	}{
		{"empty log dir", func(s *launchSpec) { s.Job.LogDir = "" }, "log directory"},
		{"blank log dir", func(s *launchSpec) { s.Job.LogDir = "  " }, "log directory"},
		{"no proc", func(s *launchSpec) { s.ProcID = "" }, "proc id"},
		{"no frame id", func(s *launchSpec) { s.Frame.ID = "" }, "frame id"},
		{"no cores", func(s *launchSpec) { s.Reserved.Cores = 0 }, "cores"},
		{"cores over int32", func(s *launchSpec) { s.Reserved.Cores = 1 << 31 }, "cores"},
		{"negative GPUs", func(s *launchSpec) { s.Reserved.GPUs = -1 }, "GPUs"},
		{"negative memory", func(s *launchSpec) { s.Layer.MemMin = -1 }, "memory"},
		{"bad range", func(s *launchSpec) { s.Layer.ChunkSize = 2; s.Layer.Range = "1-x" }, "frame set"},
		{"frame outside range", func(s *launchSpec) { s.Layer.ChunkSize = 2; s.Frame.Number = 11 }, "not in the frame set"},
	} {
		s := baseSpec()
		c.edit(&s)
		_, err := buildRunFrame(s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.name, err, c.want)
		}
	}
}

// The environment maps of the spec must not be changed or shared.
func TestBuildRunFrameCopiesEnv(t *testing.T) {
	s := baseSpec()
	rf, err := buildRunFrame(s)
	if err != nil {
		t.Fatal(err)
	}
	rf.Environment["A"] = "changed"
	if s.Job.Env["A"] != "job" || len(s.Job.Env) != 3 || len(s.Layer.Env) != 2 {
		t.Error("buildRunFrame changed or shared the spec's env")
	}
}

func BenchmarkBuildRunFrame(b *testing.B) {
	s := baseSpec()
	s.Layer.ChunkSize = 4
	s.Layer.Range = "1-1000"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildRunFrame(s); err != nil {
			b.Fatal(err)
		}
	}
}
