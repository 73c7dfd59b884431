package cache

import (
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/match"
)

// The loop wakes a cluster when capacity that may fit its work appears, and
// rebuilds its set of clusters when the topology changed: OnHosts reports
// exactly those events, and nothing for a host report that frees nothing.
func TestOnHostsReportsGrowthAndTopology(t *testing.T) {
	type call struct {
		grown []string
		topo  bool
	}
	var calls []call
	c := &clock{now: epoch}
	f := &fake{r: NewReplica(ReplicaConfig{Now: c.Now, HostPingMaxAge: time.Minute,
		Logger: slog.New(slog.DiscardHandler), OnHosts: func(grown []match.Host, topo bool) {
			calls = append(calls, call{hostIDs(grown), topo})
		}}), rels: map[string]*cdc.Relation{}}
	expect := func(step string, want ...call) {
		t.Helper()
		if !reflect.DeepEqual(calls, want) {
			t.Errorf("%s: OnHosts calls %+v, want %+v", step, calls, want)
		}
		calls = nil
	}
	f.allocs(t)
	expect("allocations", call{nil, true})

	h1, h2 := baseHost("h1", "a1"), baseHost("h2", "a1")
	h1.tags = map[string]string{"t1": "general", "t2": "pool1"}
	h2.tags = map[string]string{"t3": "general"}
	f.addHost(t, h1)
	f.addHost(t, h2)
	expect("new hosts", call{[]string{"h1"}, true}, call{[]string{"h2"}, true})

	// A booking lowers idle: nothing grew.
	f.apply(t, f.update("host", "pk_host", "h1", "pk_alloc", "a1", "str_name", "name-h1", "str_lock_state", "OPEN",
		"int_cores", 1600, "int_cores_idle", 800, "int_mem", 64*gb, "int_mem_idle", 60*gb,
		"int_gpus", 0, "int_gpus_idle", 0, "int_gpu_mem", 0, "int_gpu_mem_idle", 0, "int_thread_mode", 0))
	expect("booking echo")

	// A host report (ping, free memory unchanged) frees nothing either.
	c.set(epoch.Add(time.Second))
	f.apply(t, f.update("host_stat", "pk_host_stat", "st-h1", "pk_host", "h1", "int_mem_free", 64*gb,
		"int_mcp_total", 100*gb, "int_mcp_free", 100*gb, "ts_ping", epoch.Add(time.Second), "str_state", "UP",
		"str_os", "linux", "int_gpu_mem_free", 0))
	expect("host report")

	// The release gives the cores back: h1 grew.
	f.apply(t, f.update("host", "pk_host", "h1", "pk_alloc", "a1", "str_name", "name-h1", "str_lock_state", "OPEN",
		"int_cores", 1600, "int_cores_idle", 1600, "int_mem", 64*gb, "int_mem_idle", 64*gb,
		"int_gpus", 0, "int_gpus_idle", 0, "int_gpu_mem", 0, "int_gpu_mem_idle", 0, "int_thread_mode", 0))
	expect("release", call{[]string{"h1"}, false})

	// A new manual tag changes the clusters h2 belongs to, and offers it in
	// an index it was not in: its clusters are woken too.
	f.apply(t, f.insert("host_tag", "pk_host_tag", "t4", "pk_host", "h2", "str_tag", "pool2"))
	expect("tag added", call{[]string{"h2"}, true})
	keys := f.r.Hosts().ClusterKeys(cluster.NewKeyer(f.r.Hosts().Allocs(), 16))
	want := []cluster.Key{
		{Kind: cluster.KindAlloc, Facility: "local", Alloc: "a1"},
	}
	got := map[cluster.Key]bool{}
	for _, k := range keys {
		got[k] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("ClusterKeys %v lacks %v", keys, w)
		}
	}
	for _, tag := range []string{"pool1", "pool2"} {
		if k := (cluster.Key{Kind: cluster.KindTags, Facility: "local", Bucket: cluster.Bucket(tag, 16)}); !got[k] {
			t.Errorf("ClusterKeys %v lacks the bucket of %s", keys, tag)
		}
	}

	// Locking a host takes it out; unlocking it offers it again: it grew.
	lock := func(state string) cdc.Change {
		return f.update("host", "pk_host", "h2", "pk_alloc", "a1", "str_name", "name-h2", "str_lock_state", state,
			"int_cores", 1600, "int_cores_idle", 1600, "int_mem", 64*gb, "int_mem_idle", 64*gb,
			"int_gpus", 0, "int_gpus_idle", 0, "int_gpu_mem", 0, "int_gpu_mem_idle", 0, "int_thread_mode", 0)
	}
	f.apply(t, lock("LOCKED"))
	expect("locked")
	f.apply(t, lock("OPEN"))
	expect("unlocked", call{[]string{"h2"}, false})

	f.apply(t, f.del("host", "h2"))
	expect("host deleted", call{nil, true})
}

// A host silent for longer than the ping age is not offered; the report
// that brings it back offers it again, so it wakes its clusters as capacity
// that appeared: without that, work the host fits waited for some other
// change (a whole farm silent for five minutes, a Cuebot restart, waited
// for good on a farm with nothing else to report).
func TestOnHostsReportsAHostBackFromSilence(t *testing.T) {
	t.Parallel()
	var calls [][]string
	c := &clock{now: epoch}
	f := &fake{r: NewReplica(ReplicaConfig{Now: c.Now, HostPingMaxAge: time.Minute,
		Logger: slog.New(slog.DiscardHandler), OnHosts: func(grown []match.Host, topo bool) {
			calls = append(calls, hostIDs(grown))
		}}), rels: map[string]*cdc.Relation{}}
	f.allocs(t)
	f.addHost(t, baseHost("h1", "a1"))
	report := func(at time.Time) {
		t.Helper()
		calls = nil
		c.set(at)
		f.apply(t, f.update("host_stat", "pk_host_stat", "st-h1", "pk_host", "h1", "int_mem_free", 64*gb,
			"int_mcp_total", 100*gb, "int_mcp_free", 100*gb, "ts_ping", at, "str_state", "UP",
			"str_os", "linux", "int_gpu_mem_free", 0))
	}
	report(epoch.Add(30 * time.Second))
	if len(calls) != 0 {
		t.Errorf("a report of a host offered all along: OnHosts calls %v, want none", calls)
	}
	// Silent for two minutes, then it reports again.
	report(epoch.Add(150 * time.Second))
	if want := [][]string{{"h1"}}; !reflect.DeepEqual(calls, want) {
		t.Errorf("a report after silence: OnHosts calls %v, want %v", calls, want)
	}
}

// Polling, a host that reported again after silence is reported grown too,
// and one that kept reporting is not.
func TestPollReportsAHostBackFromSilence(t *testing.T) {
	t.Parallel()
	base := match.Resources{Cores: 1600, Mem: 64 * gb}
	state := func(pings map[string]time.Time) *hostState {
		st := newHostState()
		for id, ping := range pings {
			st.hosts[id] = &hostRec{id: id, h: match.Host{ID: id}, base: base, ping: ping, inTrees: true, up: true}
			st.grown[id] = struct{}{} // a load files every host anew
		}
		return st
	}
	cutoff := epoch.Add(time.Minute)
	old := state(map[string]time.Time{"silent": epoch, "steady": epoch.Add(90 * time.Second)})
	now := state(map[string]time.Time{"silent": epoch.Add(2 * time.Minute), "steady": epoch.Add(2 * time.Minute)})
	grown, _ := now.changesSince(old, cutoff)
	if ids, want := hostIDs(grown), []string{"silent"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("grown %v, want %v", ids, want)
	}
}

// hostIDs are the hosts' ids in order.
func hostIDs(hosts []match.Host) []string {
	var ids []string
	for _, h := range hosts {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids)
	return ids
}
