package cache

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/match"
)

func (f *fake) usageFarm(tb testing.TB) {
	f.allocs(tb)
	f.addHost(tb, baseHost("h1", "a1"))
	f.addHost(tb, baseHost("h2", "a2"))
	f.apply(tb,
		f.insert("show", "pk_show", "s1", "b_active", true, "b_scheduler_managed", true),
		f.insert("subscription", "pk_subscription", "sub1", "pk_show", "s1", "pk_alloc", "a1", "int_size", 1000, "int_burst", 2000),
		f.insert("folder_resource", "pk_folder_resource", "fr1", "pk_folder", "f1", "int_max_cores", -1, "int_max_gpus", 4),
		f.insert("job", "pk_job", "j1", "pk_show", "s1", "pk_folder", "f1", "pk_dept", "d1"),
		f.insert("job_resource", "pk_job_resource", "jr1", "pk_job", "j1", "int_max_cores", 5000, "int_max_gpus", 2),
		f.insert("layer", "pk_layer", "l1", "pk_job", "j1"),
		f.insert("layer", "pk_layer", "l2", "pk_job", "j1"))
}

func (f *fake) proc(id, host, layer, frame string, cores, gpus int64) cdc.Change {
	var fr any
	if frame != "" {
		fr = frame
	}
	return f.insert("proc", "pk_proc", id, "pk_host", host, "pk_show", "s1", "pk_layer", layer, "pk_job", "j1",
		"pk_frame", fr, "int_cores_reserved", cores, "int_gpus_reserved", gpus)
}

func TestUsageFollowsProcs(t *testing.T) {
	f := newFake(nil, 0)
	f.usageFarm(t)
	u := f.r.usage
	f.apply(t, f.proc("p1", "h1", "l1", "fr1", 100, 0), f.proc("p2", "h1", "l1", "fr2", 200, 1),
		f.proc("p3", "h2", "l2", "", 50, 0))

	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
	sub, ok := u.Subscription("s1", "a1")
	check("subscription", sub, match.Subscription{Size: 1000, Burst: 2000, Cores: 300, GPUs: 1})
	check("subscription found", ok, true)
	if _, ok := u.Subscription("s1", "a2"); ok {
		t.Error("a subscription that does not exist was found")
	}
	check("job", u.Job("j1"), match.Cap{Cores: 350, MaxCores: 5000, GPUs: 1, MaxGPUs: 2})
	check("folder", u.Folder("f1"), match.Cap{Cores: 350, MaxCores: -1, GPUs: 1, MaxGPUs: 4})
	check("unknown folder", u.Folder("f9"), match.Cap{MaxCores: -1, MaxGPUs: -1})
	// A negative max would refuse the job (Cuebot's guard): unknown is NoMax.
	check("unknown job", u.Job("j9"), match.Cap{MaxCores: match.NoMax, MaxGPUs: match.NoMax})
	c, g, n := u.Layer("l1")
	check("layer l1", [3]int64{c, g, n}, [3]int64{300, 1, 2})
	c, g, n = u.Layer("l2")
	check("layer l2 (a proc being released runs nothing)", [3]int64{c, g, n}, [3]int64{50, 0, 0})

	// The host moves to another allocation: its procs count there now.
	f.apply(t, f.update("host", "pk_host", "h1", "pk_alloc", "a2"))
	sub, _ = u.Subscription("s1", "a1")
	check("subscription after the host moved", sub.Cores, int64(0))
	check("usage on the new allocation", u.st.subUse[subKey{"s1", "a2"}], use{cores: 350, gpus: 1})

	// The job moves to another folder: its procs' usage follows.
	f.apply(t, f.update("job", "pk_job", "j1", "pk_folder", "f2"))
	check("old folder", u.Folder("f1").Cores, int64(0))
	check("new folder", u.Folder("f2").Cores, int64(350))

	// Cuebot's first release transaction unlinks the frame, the second
	// deletes the proc.
	f.apply(t, f.update("proc", "pk_proc", "p2", "pk_frame", nil))
	_, _, n = u.Layer("l1")
	check("running after unlink", n, int64(1))
	check("job cores after unlink", u.Job("j1").Cores, int64(350))
	f.apply(t, f.del("proc", "p2"), f.del("proc", "p1"), f.del("proc", "p3"))
	check("job after deletes", u.Job("j1"), match.Cap{MaxCores: 5000, MaxGPUs: 2})
	if len(u.st.subUse)+len(u.st.jobUse)+len(u.st.folderUse)+len(u.st.layerUse) != 0 {
		t.Errorf("usage left after every proc went: %+v %+v %+v %+v", u.st.subUse, u.st.jobUse, u.st.folderUse, u.st.layerUse)
	}
}

func TestLimitsCountRunningProcsOfTheirLayers(t *testing.T) {
	f := newFake(nil, 0)
	f.usageFarm(t)
	u := f.r.usage
	f.apply(t, f.proc("p1", "h1", "l1", "fr1", 100, 0), f.proc("p2", "h1", "l2", "fr2", 100, 0))
	u.mu.Lock()
	u.st.setLimits(&limitSet{max: map[string]int64{"lim": 3, "open": 50}, ofLayer: map[string][]string{"l1": {"lim"}}})
	u.mu.Unlock()
	if l, ok := u.Limit("lim"); !ok || l != (match.Limit{Running: 1, Max: 3}) {
		t.Fatalf("limit %+v %v", l, ok)
	}
	if _, ok := u.Limit("gone"); ok {
		t.Fatal("unknown limit found")
	}
	// A layer newly linked is counted.
	u.mu.Lock()
	u.st.setLimits(&limitSet{max: map[string]int64{"lim": 2}, ofLayer: map[string][]string{"l1": {"lim"}, "l2": {"lim"}}})
	u.mu.Unlock()
	if l, _ := u.Limit("lim"); l != (match.Limit{Running: 2, Max: 2}) {
		t.Fatalf("limit after a link and a lowered max: %+v", l)
	}
	f.apply(t, f.update("proc", "pk_proc", "p1", "pk_frame", nil))
	if l, _ := u.Limit("lim"); l.Running != 1 {
		t.Fatalf("limit after a release: %+v", l)
	}
	if got := u.LayerLimits("l2"); len(got) != 1 || got[0] != "lim" {
		t.Fatalf("layer limits %v", got)
	}
}

// TestCounterMarksOfReleasedProcs: the replica reports the deleted procs of
// managed shows, with their hosts and counter rows, and not those of a show
// Cuebot keeps the counters of. (Which hosts' procs this instance
// recomputes is the counters writer's concern: counters.TestWriterOwnsHosts.)
func TestCounterMarksOfReleasedProcs(t *testing.T) {
	f := newFake(nil, 0)
	var got []ReleasedProc
	f.r.cfg.OnCounters = func(c CounterChanges) { got = append(got, c.Released...) }
	f.usageFarm(t)
	f.apply(t, f.insert("show", "pk_show", "s2", "b_active", true, "b_scheduler_managed", false))
	f.apply(t, f.proc("p1", "h1", "l1", "fr1", 100, 0), f.proc("p2", "h2", "l1", "fr2", 100, 0))
	unmanaged := f.insert("proc", "pk_proc", "p3", "pk_host", "h1", "pk_show", "s2", "pk_layer", "l1", "pk_job", "j1",
		"pk_frame", "fr3", "int_cores_reserved", 100, "int_gpus_reserved", 0)
	f.apply(t, unmanaged)
	f.apply(t, f.del("proc", "p1"), f.del("proc", "p2"), f.del("proc", "p3"))
	rows := CounterRows{Show: "s1", Alloc: "a1", Layer: "l1", Job: "j1", Folder: "f1", Dept: "d1"}
	other := rows
	other.Alloc = "a2"
	want := []ReleasedProc{{Proc: "p1", Host: "h1", Rows: rows}, {Proc: "p2", Host: "h2", Rows: other}}
	if !slices.Equal(got, want) {
		t.Fatalf("reported %+v, want only the managed show's procs %+v", got, want)
	}
}

func TestMalformedRowsAreSkippedAndCounted(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.tags["t"] = "general"
	f.addHost(t, m)
	f.apply(t,
		f.update("host", "pk_host", "h1", "int_cores_idle", "lots"),
		f.update("host_stat", "pk_host_stat", "st-h1", "ts_ping", "yesterday"),
		f.insert("host", "pk_host", nil),
		f.update("host", "pk_host", "h1", "str_lock_state", "LOCKED"))
	if n := counterValue(f.r.metrics.Malformed.WithLabelValues("host")); n != 2 {
		t.Errorf("malformed host rows counted %v, want 2", n)
	}
	if n := counterValue(f.r.metrics.Malformed.WithLabelValues("host_stat")); n != 1 {
		t.Errorf("malformed host_stat rows counted %v, want 1", n)
	}
	h, _ := f.r.hosts.Host("h1")
	if h.Idle.Cores != 1600 || !h.Total.Covers(h.Idle) {
		t.Errorf("a malformed update changed the host: %+v", h)
	}
	if got := walkAll(f.r.hosts, "local", "general", match.Resources{}); len(got) != 0 {
		t.Error("the good update after the bad ones was not applied (host still offered while LOCKED)")
	}
}

func TestUnchangedToastValuesKeepTheCachedValue(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	f.addHost(t, m)
	f.apply(t, f.insert("host_tag", "pk_host_tag", "t1", "pk_host", "h1", "str_tag", "General"))
	// An update that leaves a (hypothetically TOASTed) value unchanged
	// does not send it.
	f.apply(t, f.update("host_tag", "pk_host_tag", "t1", "pk_host", "h1", "str_tag", cdc.Value{Kind: cdc.Unchanged}),
		f.update("host", "pk_host", "h1", "str_name", cdc.Value{Kind: cdc.Unchanged}, "int_cores_idle", 800))
	h, _ := f.r.hosts.Host("h1")
	if h.Name != "name-h1" || len(h.Tags) != 1 || h.Tags[0] != "general" || h.Idle.Cores != 800 {
		t.Fatalf("host after updates with unchanged values: %+v", h)
	}
}

func TestTruncateForcesAResync(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	err := f.r.Apply(&cdc.Txn{EndLSN: 100, Changes: []cdc.Change{{Op: cdc.Truncate, Rel: f.rel("host")}}})
	if err == nil {
		t.Fatal("a truncate of a replicated table must make the stream resync")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
