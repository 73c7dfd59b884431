package cache

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/match"
)

// fake feeds a Replica synthetic transactions, as the stream would, for
// tests that need no database.
type fake struct {
	r    *Replica
	lsn  cdc.LSN
	rels map[string]*cdc.Relation
}

func newFake(now func() time.Time, maxAge time.Duration) *fake {
	return &fake{
		r: NewReplica(ReplicaConfig{Now: now, HostPingMaxAge: maxAge, Locality: true,
			Logger: slog.New(slog.DiscardHandler)}),
		rels: map[string]*cdc.Relation{},
	}
}

func (f *fake) rel(table string) *cdc.Relation {
	if r := f.rels[table]; r != nil {
		return r
	}
	r := cdc.NewRelation(uint32(len(f.rels)+1), "public", table, tableByName[table].cols)
	f.rels[table] = r
	return r
}

// text renders a Go value the way PostgreSQL's text output would.
func text(v any) cdc.Value {
	switch v := v.(type) {
	case nil:
		return cdc.Value{Kind: cdc.Null}
	case cdc.Value:
		return v
	case bool:
		if v {
			return cdc.Value{Kind: cdc.Text, Text: "t"}
		}
		return cdc.Value{Kind: cdc.Text, Text: "f"}
	case time.Time:
		return cdc.Value{Kind: cdc.Text, Text: v.UTC().Format("2006-01-02 15:04:05.999999-07")}
	default:
		return cdc.Value{Kind: cdc.Text, Text: fmt.Sprint(v)}
	}
}

// upsert is an insert (or update) of table with the given column values;
// columns not given are absent, as unchanged TOAST values are.
func (f *fake) upsert(op cdc.Op, table string, kv ...any) cdc.Change {
	rel := f.rel(table)
	t := make(cdc.Tuple, len(rel.Columns))
	for i := 0; i < len(kv); i += 2 {
		col := rel.Col(kv[i].(string))
		if col < 0 {
			panic("no column " + kv[i].(string))
		}
		t[col] = text(kv[i+1])
	}
	return cdc.Change{Op: op, Rel: rel, New: t}
}

func (f *fake) insert(table string, kv ...any) cdc.Change { return f.upsert(cdc.Insert, table, kv...) }
func (f *fake) update(table string, kv ...any) cdc.Change { return f.upsert(cdc.Update, table, kv...) }

// del deletes by primary key: the old tuple holds the key only.
func (f *fake) del(table, key string) cdc.Change {
	rel := f.rel(table)
	t := make(cdc.Tuple, len(rel.Columns))
	for i := range t {
		t[i] = cdc.Value{Kind: cdc.Null}
	}
	t[0] = text(key)
	return cdc.Change{Op: cdc.Delete, Rel: rel, Old: t}
}

func (f *fake) apply(tb testing.TB, changes ...cdc.Change) cdc.LSN {
	tb.Helper()
	f.lsn += 10
	if err := f.r.Apply(&cdc.Txn{Xid: uint32(f.lsn), EndLSN: f.lsn, Changes: changes}); err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return f.lsn
}

// hostModel is a test's own idea of one host's rows.
type hostModel struct {
	id, alloc, name, lock, state, os   string
	cores, coresIdle, mem, memIdle     int64
	gpus, gpusIdle, gpuMem, gpuMemIdle int64
	memFree, gpuMemFree                int64
	mcpTotal, mcpFree                  int64
	ping                               time.Time
	tags                               map[string]string // pk_host_tag -> tag as written
}

func (f *fake) hostRows(m *hostModel) []cdc.Change {
	return []cdc.Change{
		f.insert("host", "pk_host", m.id, "pk_alloc", m.alloc, "str_name", m.name, "str_lock_state", m.lock,
			"int_cores", m.cores, "int_cores_idle", m.coresIdle, "int_mem", m.mem, "int_mem_idle", m.memIdle,
			"int_gpus", m.gpus, "int_gpus_idle", m.gpusIdle, "int_gpu_mem", m.gpuMem, "int_gpu_mem_idle", m.gpuMemIdle,
			"int_thread_mode", 0),
		f.insert("host_stat", "pk_host_stat", "st-"+m.id, "pk_host", m.id, "int_mem_free", m.memFree,
			"int_mcp_total", m.mcpTotal, "int_mcp_free", m.mcpFree, "ts_ping", m.ping, "str_state", m.state,
			"str_os", m.os, "int_gpu_mem_free", m.gpuMemFree),
	}
}

// offeredModel is the host's expected effective idle and whether it is
// offered, computed independently of the code under test.
func offeredModel(m *hostModel, taken match.Resources, cutoff time.Time) (match.Resources, bool) {
	idle := match.Resources{Cores: m.coresIdle, Mem: min(m.memIdle, m.memFree), GPUs: m.gpusIdle,
		GPUMem: min(m.gpuMemIdle, m.gpuMemFree)}.Sub(taken)
	ok := m.state == "UP" && m.lock == "OPEN" && idle.Cores >= 10 && idle.Mem >= 262144 && m.memFree >= 524288 &&
		m.mcpFree*100 >= 5*m.mcpTotal && !m.ping.Before(cutoff)
	return idle, ok
}

// checkIndex compares every index with a brute-force filter of the hosts'
// records, and checks that no index holds an entry that is not where its
// host is filed now (no ghosts).
func checkIndex(tb testing.TB, h *Hosts) {
	tb.Helper()
	h.mu.RLock()
	defer h.mu.RUnlock()
	st := h.st
	cutoff := h.cutoff()
	filed := 0
	carriers := map[tagKey]int{}
	offered := map[tagKey][]string{}
	for _, rec := range st.hosts {
		for _, tag := range rec.h.Tags {
			k := tagKey{rec.h.Facility, tag}
			carriers[k]++
			if rec.inTrees {
				offered[k] = append(offered[k], rec.id)
			}
		}
	}
	for k := range carriers {
		if st.index[k] == nil {
			tb.Errorf("no index for %v, which %d hosts carry", k, carriers[k])
		}
	}
	for k, ix := range st.index {
		n, want := carriers[k], offered[k]
		if n != ix.n {
			tb.Errorf("index %v counts %d hosts, %d carry the tag", k, ix.n, n)
		}
		var got []string
		prev := struct{ c, m int64 }{-1 << 62, 0}
		ix.levels.Ascend(func(it levelItem) bool {
			maxMem := int64(-1 << 62)
			it.lv.hosts.Ascend(func(s slot) bool {
				filed++
				r := s.rec
				if st.hosts[r.id] != r || !r.inTrees || r.ixCores != it.cores || r.ixMem != s.mem {
					tb.Errorf("index %v: ghost entry of %s at (%d, %d)", k, r.id, it.cores, s.mem)
				}
				if r.h.Idle.Cores != it.cores || r.h.Idle.Mem != s.mem {
					tb.Errorf("index %v: %s filed at (%d, %d), idle (%d, %d)", k, r.id, it.cores, s.mem,
						r.h.Idle.Cores, r.h.Idle.Mem)
				}
				if it.cores < prev.c || (it.cores == prev.c && s.mem < prev.m) {
					tb.Errorf("index %v out of order at %s", k, r.id)
				}
				prev.c, prev.m = it.cores, s.mem
				maxMem = max(maxMem, s.mem)
				got = append(got, r.id)
				return true
			})
			if maxMem != it.lv.maxMem {
				tb.Errorf("index %v level %d: max memory %d, largest filed %d", k, it.cores, it.lv.maxMem, maxMem)
			}
			return true
		})
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			tb.Errorf("index %v holds %v, offered hosts carrying the tag are %v", k, got, want)
		}
	}
	inTrees := 0
	for _, rec := range st.hosts {
		if rec.inTrees {
			inTrees += len(rec.idxs)
		}
		if rec.inTrees != offerable(rec) {
			tb.Errorf("host %s: filed %v, offerable %v", rec.id, rec.inTrees, offerable(rec))
		}
	}
	if filed != inTrees {
		tb.Errorf("indexes hold %d entries, filed hosts account for %d", filed, inTrees)
	}
	_ = cutoff
}

// walkAll collects a walk's hosts.
func walkAll(h *Hosts, facility, tag string, min match.Resources) []match.Host {
	var out []match.Host
	h.Walk(facility, tag, min, nil, func(x match.Host) bool { out = append(out, x); return true })
	return out
}

// bruteWalk is what Walk must return, from the test's models.
func bruteWalk(models map[string]*hostModel, taken map[string]match.Resources, facilityOf map[string]string,
	facility, tag string, min match.Resources, cutoff time.Time) []string {
	type cand struct {
		id   string
		idle match.Resources
	}
	var cs []cand
	for _, m := range models {
		if facilityOf[m.alloc] != facility {
			continue
		}
		carries := false
		for _, t := range m.tags {
			if normalizeTest(t) == tag {
				carries = true
			}
		}
		idle, ok := offeredModel(m, taken[m.id], cutoff)
		if carries && ok && idle.Covers(min) {
			cs = append(cs, cand{m.id, idle})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.idle.Cores, b.idle.Cores), cmp.Compare(a.idle.Mem, b.idle.Mem), cmp.Compare(a.id, b.id))
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.id
	}
	return out
}
