package cache

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
)

// table is a replicated table: the columns the cache reads, primary key
// first. migrations/0002 publishes exactly these (a test compares them), and
// the snapshot load reads them.
type table struct {
	name string
	cols []string
}

// tables in load order: parents before the rows that refer to them.
var tables = []table{
	{"alloc", []string{"pk_alloc", "pk_facility", "str_tag"}},
	{"host", []string{"pk_host", "pk_alloc", "str_name", "str_lock_state", "int_cores", "int_cores_idle", "int_mem",
		"int_mem_idle", "int_gpus", "int_gpus_idle", "int_gpu_mem", "int_gpu_mem_idle", "int_thread_mode"}},
	{"host_stat", []string{"pk_host_stat", "pk_host", "int_mem_free", "int_mcp_total", "int_mcp_free", "ts_ping",
		"str_state", "str_os", "int_gpu_mem_free"}},
	{"host_tag", []string{"pk_host_tag", "pk_host", "str_tag"}},
	{"show", []string{"pk_show", "b_active", "b_scheduler_managed"}},
	{"subscription", []string{"pk_subscription", "pk_show", "pk_alloc", "int_size", "int_burst"}},
	{"folder_resource", []string{"pk_folder_resource", "pk_folder", "int_max_cores", "int_max_gpus"}},
	{"job", []string{"pk_job", "pk_show", "pk_folder", "pk_dept"}},
	{"job_resource", []string{"pk_job_resource", "pk_job", "int_max_cores", "int_max_gpus"}},
	{"layer", []string{"pk_layer", "pk_job"}},
	{"proc", []string{"pk_proc", "pk_host", "pk_show", "pk_layer", "pk_job", "pk_frame", "int_cores_reserved",
		"int_gpus_reserved"}},
}

var tableByName = func() map[string]*table {
	m := map[string]*table{}
	for i := range tables {
		m[tables[i].name] = &tables[i]
	}
	return m
}()

// hostTables are the tables the host index is built from.
func hostTable(name string) bool {
	return name == "alloc" || name == "host" || name == "host_stat" || name == "host_tag"
}

type allocRow struct{ facility, tag string }

type hostRow struct {
	alloc, name, lock  string
	cores, coresIdle   int64
	mem, memIdle       int64
	gpus, gpusIdle     int64
	gpuMem, gpuMemIdle int64
	threadMode         int64
}

type statRow struct {
	host                       string
	memFree, mcpTotal, mcpFree int64
	ping                       time.Time
	state, os                  string
	gpuMemFree                 int64
}

type tagRow struct{ host, tag string } // tag normalized

// malformed is a row the cache cannot read; it is logged with its key,
// counted and skipped (DESIGN.md, contract 5).
type malformed struct {
	table, key string
	err        error
}

func (m *malformed) Error() string {
	return fmt.Sprintf("malformed %s row %q: %v", m.table, m.key, m.err)
}

// rowReader decodes the text values of one tuple onto a row. A column the
// tuple does not carry (a TOASTed value an UPDATE left unchanged) keeps the
// value the row already has: rows are decoded onto their cached copy.
type rowReader struct {
	rel *cdc.Relation
	t   cdc.Tuple
	err error
}

func (r *rowReader) value(col string) (cdc.Value, bool) {
	v := r.t.Get(r.rel, col)
	if v.Kind == cdc.Absent || v.Kind == cdc.Unchanged {
		return v, false
	}
	return v, true
}

func (r *rowReader) fail(col string, err error) {
	if r.err == nil {
		r.err = fmt.Errorf("column %s: %w", col, err)
	}
}

func (r *rowReader) str(col string, dst *string) {
	if v, ok := r.value(col); ok {
		*dst = v.Text // NULL reads as ""
	}
}

func (r *rowReader) int(col string, dst *int64) {
	v, ok := r.value(col)
	if !ok {
		return
	}
	if v.Kind == cdc.Null {
		r.fail(col, fmt.Errorf("unexpected NULL"))
		return
	}
	n, err := strconv.ParseInt(v.Text, 10, 64)
	if err != nil {
		r.fail(col, err)
		return
	}
	*dst = n
}

func (r *rowReader) bool(col string, dst *bool) {
	v, ok := r.value(col)
	if !ok {
		return
	}
	switch v.Text {
	case "t":
		*dst = true
	case "f":
		*dst = false
	default:
		r.fail(col, fmt.Errorf("not a boolean: %q", v.Text))
	}
}

// Timestamps arrive in ISO style in UTC: both connections set DateStyle
// and TimeZone.
var timeLayouts = []string{"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999-07:00:00"}

func (r *rowReader) time(col string, dst *time.Time) {
	v, ok := r.value(col)
	if !ok {
		return
	}
	if v.Kind == cdc.Null {
		*dst = time.Time{}
		return
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, v.Text); err == nil {
			*dst = t
			return
		}
	}
	r.fail(col, fmt.Errorf("not a timestamp: %q", v.Text))
}

// keyOf is the primary key of a change: from the new row, or from the old
// key of a delete.
func keyOf(c *cdc.Change, col string) (string, error) {
	t := c.New
	if c.Op == cdc.Delete {
		t = c.Old
	}
	v := t.Get(c.Rel, col)
	if v.Kind != cdc.Text || v.Text == "" {
		return "", fmt.Errorf("no primary key %s", col)
	}
	return v.Text, nil
}

// applyHost applies a change of alloc, host, host_stat or host_tag to st,
// marking the hosts to refresh. It returns the host whose allocation the
// usage must follow ("" for none) and, for a host change, whether the host
// is gone.
func (st *hostState) apply(c *cdc.Change) (host string, gone bool, err error) {
	spec := tableByName[c.Rel.Name]
	key, err := keyOf(c, spec.cols[0])
	if err != nil {
		return "", false, &malformed{table: spec.name, err: err}
	}
	rd := rowReader{rel: c.Rel, t: c.New}
	bad := func() error {
		if rd.err != nil {
			return &malformed{table: spec.name, key: key, err: rd.err}
		}
		return nil
	}
	switch spec.name {
	case "alloc":
		old, had := st.allocs[key]
		if c.Op == cdc.Delete {
			delete(st.allocs, key)
		} else {
			row := old
			rd.str("pk_facility", &row.facility)
			rd.str("str_tag", &row.tag)
			if err := bad(); err != nil {
				return "", false, err
			}
			st.allocs[key] = row
			if had && row.facility == old.facility {
				// A changed tag moves hosts between clusters, not indexes.
				st.topo = st.topo || row.tag != old.tag
				return "", false, nil
			}
		}
		st.topo = true
		// A facility is part of every index key of the allocation's hosts.
		for id, rec := range st.hosts {
			if rec.row.alloc == key {
				st.dirty[id] = struct{}{}
			}
		}
	case "host":
		if c.Op == cdc.Delete {
			st.drop(key)
			delete(st.dirty, key)
			return key, true, nil
		}
		rec := st.hosts[key]
		row := hostRow{}
		if rec != nil {
			row = rec.row
		}
		rd.str("pk_alloc", &row.alloc)
		rd.str("str_name", &row.name)
		rd.str("str_lock_state", &row.lock)
		rd.int("int_cores", &row.cores)
		rd.int("int_cores_idle", &row.coresIdle)
		rd.int("int_mem", &row.mem)
		rd.int("int_mem_idle", &row.memIdle)
		rd.int("int_gpus", &row.gpus)
		rd.int("int_gpus_idle", &row.gpusIdle)
		rd.int("int_gpu_mem", &row.gpuMem)
		rd.int("int_gpu_mem_idle", &row.gpuMemIdle)
		rd.int("int_thread_mode", &row.threadMode)
		if err := bad(); err != nil {
			return "", false, err
		}
		if rec == nil {
			rec = &hostRec{id: key, tagSide: tagSide(key)}
			st.hosts[key] = rec
			st.markNew(rec)
		}
		rec.row = row
		st.dirty[key] = struct{}{}
		return key, false, nil
	case "host_stat":
		old := st.stats[key]
		if c.Op == cdc.Delete {
			if old != nil {
				delete(st.stats, key)
				if st.statOf[old.host] == old {
					delete(st.statOf, old.host)
				}
				st.dirty[old.host] = struct{}{}
			}
			return "", false, nil
		}
		row := statRow{}
		if old != nil {
			row = *old
		}
		rd.str("pk_host", &row.host)
		rd.int("int_mem_free", &row.memFree)
		rd.int("int_mcp_total", &row.mcpTotal)
		rd.int("int_mcp_free", &row.mcpFree)
		rd.time("ts_ping", &row.ping)
		rd.str("str_state", &row.state)
		rd.str("str_os", &row.os)
		rd.int("int_gpu_mem_free", &row.gpuMemFree)
		if err := bad(); err != nil {
			return "", false, err
		}
		if old != nil && old.host != row.host {
			if st.statOf[old.host] == old {
				delete(st.statOf, old.host)
			}
			st.dirty[old.host] = struct{}{}
		}
		p := &row
		st.stats[key] = p
		st.statOf[row.host] = p
		st.dirty[row.host] = struct{}{}
	case "host_tag":
		old, had := st.tagRows[key]
		if had {
			st.untag(old)
		}
		if c.Op == cdc.Delete {
			delete(st.tagRows, key)
			return "", false, nil
		}
		row := old
		rd.str("pk_host", &row.host)
		var raw string
		if had {
			raw = row.tag
		}
		rd.str("str_tag", &raw)
		row.tag = cluster.Normalize(raw)
		if err := bad(); err != nil {
			if had {
				st.tag(old)
			}
			return "", false, err
		}
		st.tagRows[key] = row
		st.tag(row)
	}
	return "", false, nil
}

// tag gives the host the words of a host_tag row: Cuebot matches layers
// against host.str_tags, the host's tags joined by spaces, so a tag with
// whitespace inside stands for each of its words there.
func (st *hostState) tag(t tagRow) {
	words := strings.Fields(t.tag)
	if len(words) == 0 {
		return
	}
	m := st.hostTags[t.host]
	if m == nil {
		m = map[string]int{}
		st.hostTags[t.host] = m
	}
	for _, w := range words {
		m[w]++
	}
	st.dirty[t.host] = struct{}{}
}

func (st *hostState) untag(t tagRow) {
	if m := st.hostTags[t.host]; m != nil {
		for _, w := range strings.Fields(t.tag) {
			if m[w]--; m[w] <= 0 {
				delete(m, w)
			}
		}
		if len(m) == 0 {
			delete(st.hostTags, t.host)
		}
	}
	st.dirty[t.host] = struct{}{}
}
