package cache

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// replicaHarness runs a Replica against a test database. Tests wait on the
// replica's signals (waitUntil wakes on every event), never on sleeps.
type replicaHarness struct {
	t    *testing.T
	db   *pgtest.DB
	pool *pgxpool.Pool
	r    *Replica
	poke chan struct{}
	hook atomic.Pointer[func(ReplicaEvent)]

	loads, limitReloads atomic.Int64
	// failFast makes start fail at the feed's first failed session or
	// poll, with its error, instead of waiting out its retries.
	failFast bool
	dropped  atomic.Pointer[error]

	stop func()
}

func newReplicaHarness(t *testing.T, db *pgtest.DB, edit func(*ReplicaConfig)) *replicaHarness {
	t.Helper()
	h := &replicaHarness{t: t, db: db, pool: db.Pool, poke: make(chan struct{}, 1)}
	cfg := ReplicaConfig{
		DSN:        db.DSN,
		Pool:       db.Pool,
		Logger:     slog.New(slog.DiscardHandler),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 300 * time.Millisecond,
		Observe:    h.observe,
	}
	if edit != nil {
		edit(&cfg)
	}
	h.r = NewReplica(cfg)
	if st := h.r.Stream(); st != nil {
		st.StatusInterval = 200 * time.Millisecond
	}
	return h
}

func (h *replicaHarness) observe(e ReplicaEvent) {
	switch {
	case e.Kind == EventStream && e.Stream.Kind == cdc.EventLoaded:
		h.loads.Add(1)
	case e.Kind == EventStream && e.Stream.Kind == cdc.EventDisconnected:
		h.dropped.Store(&e.Stream.Err)
	case e.Kind == EventLimits && e.Err == nil:
		h.limitReloads.Add(1)
	}
	if f := h.hook.Load(); f != nil {
		(*f)(e)
	}
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// start runs the replica until the test ends (or stop) and waits for its
// first snapshot.
func (h *replicaHarness) start() *replicaHarness {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			h.t.Errorf("Run did not return")
		}
	})
	h.t.Cleanup(h.stop)
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case <-h.r.Ready():
			return h
		case <-h.poke:
			if err := h.dropped.Load(); h.failFast && err != nil {
				h.t.Fatalf("no snapshot loaded: %v", *err)
			}
		case <-deadline:
			h.t.Fatal("no snapshot loaded")
		}
	}
}

func (h *replicaHarness) waitUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(60 * time.Second)
	for !cond() {
		select {
		case <-h.poke:
		case <-deadline:
			h.t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func (h *replicaHarness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.pool.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// lsn is the current WAL position, as dispatch reads it after a commit.
func (h *replicaHarness) lsn() cdc.LSN {
	h.t.Helper()
	var lsn cdc.LSN
	if err := h.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		h.t.Fatal(err)
	}
	return lsn
}

// sync waits until the replica reflects every commit made so far.
func (h *replicaHarness) sync() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.r.WaitApplied(ctx, h.lsn()); err != nil {
		h.t.Fatal(err)
	}
}

func (h *replicaHarness) slots() int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// queryMap reads key -> the rest of the row, as text.
func queryMap(t *testing.T, pool *pgxpool.Pool, sql string) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var parts []string
		for _, v := range rows.RawValues() {
			parts = append(parts, string(v))
		}
		out[parts[0]] = strings.Join(parts[1:], " ")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func diffMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	keys := slices.Sorted(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	n := 0
	for _, k := range keys {
		if got[k] != want[k] && n < 10 {
			t.Errorf("%s %s: cache %q, tables %q", what, k, got[k], want[k])
			n++
		}
	}
	t.Errorf("%s: %d rows in the cache, %d in the tables", what, len(got), len(want))
}

// matchesDB compares the cache with the tables row by row: every host as
// matching sees it and whether it is offered, usage per subscription, job,
// folder and layer summed from proc, and the caps. Call it with nothing
// checked out, after sync.
func (h *replicaHarness) matchesDB() {
	t := h.t
	t.Helper()
	got := map[string]string{}
	hs := h.r.hosts
	hs.mu.RLock()
	for id, rec := range hs.st.hosts {
		x := rec.h
		got[id] = fmt.Sprintf("%s %s %s %s %d %d %d %d %d %d %d %d %d %d %d %d %v {%s}", x.Name, x.Facility, x.Alloc,
			x.OS, x.ThreadMode, x.Total.Cores, x.Total.Mem, x.Total.GPUs, x.Total.GPUMem, x.Idle.Cores, x.Idle.Mem,
			x.Idle.GPUs, x.Idle.GPUMem, x.MemFree, x.TempFree, x.TempTotal, rec.inTrees, strings.Join(x.Tags, ","))
	}
	hs.mu.RUnlock()
	want := queryMap(t, h.pool, `
		SELECT h.pk_host, h.str_name, a.pk_facility, h.pk_alloc, coalesce(s.str_os, ''), h.int_thread_mode,
		       h.int_cores, h.int_mem, h.int_gpus, h.int_gpu_mem,
		       h.int_cores_idle, least(h.int_mem_idle, coalesce(s.int_mem_free, 0)), h.int_gpus_idle,
		       least(h.int_gpu_mem_idle, coalesce(s.int_gpu_mem_free, 0)),
		       coalesce(s.int_mem_free, 0), coalesce(s.int_mcp_free, 0), coalesce(s.int_mcp_total, 0),
		       CASE WHEN coalesce(s.str_state = 'UP', false) AND h.str_lock_state = 'OPEN'
		             AND h.int_cores_idle >= 10 AND least(h.int_mem_idle, s.int_mem_free) >= 262144
		             AND s.int_mem_free >= 524288 AND s.int_mcp_free * 100 >= 5 * s.int_mcp_total
		            THEN 'true' ELSE 'false' END,
		       '{' || coalesce((SELECT string_agg(DISTINCT lower(trim(t.str_tag)), ',' ORDER BY lower(trim(t.str_tag)))
		                          FROM host_tag t WHERE t.pk_host = h.pk_host AND trim(t.str_tag) <> ''), '') || '}'
		  FROM host h JOIN alloc a ON a.pk_alloc = h.pk_alloc LEFT JOIN host_stat s ON s.pk_host = h.pk_host`)
	diffMaps(t, "host", got, want)
	checkIndex(t, hs)

	u := h.r.usage
	u.mu.RLock()
	gotSubs, gotJobs, gotFolders, gotLayers := map[string]string{}, map[string]string{}, map[string]string{}, map[string]string{}
	for k, v := range u.st.subUse {
		gotSubs[k.show+"/"+k.alloc] = fmt.Sprintf("%d %d", v.cores, v.gpus)
	}
	for k, v := range u.st.jobUse {
		gotJobs[k] = fmt.Sprintf("%d %d", v.cores, v.gpus)
	}
	for k, v := range u.st.folderUse {
		gotFolders[k] = fmt.Sprintf("%d %d", v.cores, v.gpus)
	}
	for k, v := range u.st.layerUse {
		gotLayers[k] = fmt.Sprintf("%d %d %d", v.cores, v.gpus, v.running)
	}
	gotJobRows := map[string]string{}
	for k, v := range u.st.jobs {
		gotJobRows[k] = v.show + " " + v.folder + " " + v.dept
	}
	u.mu.RUnlock()
	diffMaps(t, "subscription usage", gotSubs, queryMap(t, h.pool, `
		SELECT p.pk_show || '/' || h.pk_alloc, sum(p.int_cores_reserved), sum(p.int_gpus_reserved)
		  FROM proc p JOIN host h ON h.pk_host = p.pk_host GROUP BY 1`))
	diffMaps(t, "job usage", gotJobs, queryMap(t, h.pool,
		`SELECT pk_job, sum(int_cores_reserved), sum(int_gpus_reserved) FROM proc GROUP BY 1`))
	diffMaps(t, "folder usage", gotFolders, queryMap(t, h.pool, `
		SELECT j.pk_folder, sum(p.int_cores_reserved), sum(p.int_gpus_reserved)
		  FROM proc p JOIN job j ON j.pk_job = p.pk_job GROUP BY 1`))
	diffMaps(t, "layer usage", gotLayers, queryMap(t, h.pool,
		`SELECT pk_layer, sum(int_cores_reserved), sum(int_gpus_reserved), count(pk_frame) FROM proc GROUP BY 1`))
	diffMaps(t, "job", gotJobRows, queryMap(t, h.pool, `SELECT pk_job, pk_show, pk_folder, pk_dept FROM job`))

	for k, v := range queryMap(t, h.pool, `SELECT pk_show || ' ' || pk_alloc, int_size, int_burst FROM subscription`) {
		show, alloc, _ := strings.Cut(k, " ")
		s, ok := u.Subscription(show, alloc)
		if fmt.Sprintf("%d %d", s.Size, s.Burst) != v || !ok {
			t.Errorf("subscription %s: cache %+v %v, table %s", k, s, ok, v)
		}
	}
	for k, v := range queryMap(t, h.pool, `SELECT pk_job, int_max_cores, int_max_gpus FROM job_resource`) {
		if c := u.Job(k); fmt.Sprintf("%d %d", c.MaxCores, c.MaxGPUs) != v {
			t.Errorf("job_resource of %s: cache %+v, table %s", k, c, v)
		}
	}
	for k, v := range queryMap(t, h.pool, `SELECT pk_folder, int_max_cores, int_max_gpus FROM folder_resource`) {
		if c := u.Folder(k); fmt.Sprintf("%d %d", c.MaxCores, c.MaxGPUs) != v {
			t.Errorf("folder_resource of %s: cache %+v, table %s", k, c, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func TestPublicationHoldsWhatTheCacheReads(t *testing.T) {
	db := pgtest.NewDB(t)
	got := queryMap(t, db.Pool, `SELECT tablename, array_to_string(attnames, ' ')
		FROM pg_publication_tables WHERE pubname = 'cuesched_cache'`)
	want := map[string]string{}
	for _, tb := range tables {
		cols := slices.Clone(tb.cols)
		want[tb.name] = strings.Join(cols, " ")
	}
	// attnames lists columns in table order; compare as sets.
	for k, v := range got {
		f := strings.Fields(v)
		sort.Strings(f)
		got[k] = strings.Join(f, " ")
	}
	for k, v := range want {
		f := strings.Fields(v)
		sort.Strings(f)
		want[k] = strings.Join(f, " ")
	}
	diffMaps(t, "published table", got, want)
	// Cuebot's own writes on the tables left out keep working.
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO limit_record (pk_limit_record, str_name, int_max_value) VALUES ('l1', 'lim', 3);
		UPDATE limit_record SET int_max_value = 4 WHERE pk_limit_record = 'l1';
		DELETE FROM limit_record WHERE pk_limit_record = 'l1';
		UPDATE layer_limit SET pk_limit_record = pk_limit_record; DELETE FROM layer_limit WHERE false`); err != nil {
		t.Fatalf("Cuebot's writes on limit_record and layer_limit: %v", err)
	}
}

// TestReplicaFollowsChanges: host changes of every kind and proc inserts
// and deletes reach the index and usage.
func TestReplicaFollowsChanges(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	h := newReplicaHarness(t, db, nil).start()
	h.matchesDB()
	host := s.Hosts["127.10.0.1"]
	hs := h.r.Hosts()
	offered := func(fac, tag string) bool {
		found := false
		hs.Walk(fac, tag, match.Resources{}, nil, func(x match.Host) bool { found = found || x.ID == host; return true })
		return found
	}
	local, cloud := facilityID(t, db, "local"), facilityID(t, db, "cloud")
	for _, step := range []struct {
		name  string
		sql   string
		check func() bool
	}{
		{"idle cores", `UPDATE host SET int_cores_idle = 500 WHERE pk_host = $1`,
			func() bool { x, _ := hs.Host(host); return x.Idle.Cores == 500 }},
		{"locked", `UPDATE host SET str_lock_state = 'LOCKED' WHERE pk_host = $1`,
			func() bool { return !offered(local, "general") && hs.Tagged(local, "general") }},
		{"opened", `UPDATE host SET str_lock_state = 'OPEN' WHERE pk_host = $1`,
			func() bool { return offered(local, "general") }},
		{"hardware down", `UPDATE host_stat SET str_state = 'DOWN' WHERE pk_host = $1`,
			func() bool { return !offered(local, "general") }},
		{"hardware up", `UPDATE host_stat SET str_state = 'UP' WHERE pk_host = $1`,
			func() bool { return offered(local, "general") }},
		{"tag added", `INSERT INTO host_tag (pk_host_tag, pk_host, str_tag, str_tag_type) VALUES ('tag-x', $1, 'Special', 'MANUAL')`,
			func() bool { return offered(local, "special") && hs.Tagged(local, "special") }},
		{"tag removed", `DELETE FROM host_tag WHERE pk_host_tag = 'tag-x' AND pk_host = $1`,
			func() bool { return !hs.Tagged(local, "special") }},
		{"allocation moved to another facility", `UPDATE host SET pk_alloc = (SELECT pk_alloc FROM alloc WHERE str_name = 'cloud.general') WHERE pk_host = $1`,
			func() bool { return offered(cloud, "pool1") && !offered(local, "pool1") }},
		{"allocation moved back", `UPDATE host SET pk_alloc = (SELECT pk_alloc FROM alloc WHERE str_name = 'local.general') WHERE pk_host = $1`,
			func() bool { return offered(local, "pool1") }},
	} {
		h.exec(step.sql, host)
		h.sync()
		if !step.check() {
			x, _ := hs.Host(host)
			t.Fatalf("%s: not reflected: %+v", step.name, x)
		}
		h.matchesDB()
	}
	// Procs: a Cuebot-style booking and release.
	sim := newSim(db)
	job := s.Jobs["job-a"]
	if _, err := sim.Book(context.Background(), job.Frames["0001-render"], host, 200, 2*gb, 0, 0); err != nil {
		t.Fatal(err)
	}
	h.sync()
	if c := h.r.Usage().Job(job.ID); c.Cores != 200 {
		t.Fatalf("job usage after a booking: %+v", c)
	}
	h.matchesDB()
	if err := sim.Succeed(context.Background(), job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.sync()
	if c := h.r.Usage().Job(job.ID); c.Cores != 0 {
		t.Fatalf("job usage after the release: %+v", c)
	}
	h.matchesDB()
}

func loadFarm(t *testing.T, db *pgtest.DB, f *seed.Farm) *seed.Seeded {
	t.Helper()
	s, err := seed.Load(context.Background(), db.Pool, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// smallFarm: eight hosts in two facilities, a managed show subscribed to
// both, a folder with caps, a limit and one job.
func smallFarm() *seed.Farm {
	f := &seed.Farm{
		Shows: []seed.Show{{Name: "alpha", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 100000, Burst: 200000}, {Alloc: "cloud.general", Size: 0, Burst: 100000}}}},
		Folders: []seed.Folder{{Show: "alpha", Name: "fx", MaxCores: 5000, MaxGPUs: seed.NoCap}},
		Limits:  []seed.Limit{{Name: "lic", Max: 2}},
		Jobs: []seed.Job{{Name: "job-a", Show: "alpha", Folder: "fx", Layers: []seed.Layer{
			{Name: "render", Frames: 5, Cores: 100, Mem: gb, Threadable: true},
			{Name: "comp", Frames: 5, Cores: 100, Mem: gb, Limits: []string{"lic"}},
			{Name: "lit", Frames: 5, Cores: 100, Mem: gb}}}},
	}
	for i := range 8 {
		alloc := "local.general"
		if i >= 6 {
			alloc = "cloud.general"
		}
		f.Hosts = append(f.Hosts, seed.Host{Name: seed.LoopbackName(i), Alloc: alloc, Cores: 800, Mem: 32 * gb,
			ManualTags: []string{fmt.Sprintf("pool%d", i%2+1)}})
	}
	return f
}

func facilityID(t *testing.T, db *pgtest.DB, name string) string {
	t.Helper()
	var id string
	if err := db.Pool.QueryRow(context.Background(), `SELECT pk_facility FROM facility WHERE str_name = $1`, name).
		Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func newSim(db *pgtest.DB) *cuebotsim.Sim { return &cuebotsim.Sim{Pool: db.Pool} }

// TestCacheMigrationsDownAndUp: 0003 and 0002 each remove exactly what they
// add, and apply again.
func TestCacheMigrationsDownAndUp(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := context.Background()
	state := func() string {
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_publication WHERE pubname = 'cuesched_cache') || ' ' ||
			(SELECT count(*) FROM pg_trigger WHERE tgname = 'cuesched_limits_notify') || ' ' ||
			(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
			  WHERE n.nspname = 'cuesched' AND p.proname = 'notify_limits')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	run := func(file string) {
		sql, err := os.ReadFile(filepath.Join("..", "migrations", file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	if got := state(); got != "1 2 1" {
		t.Fatalf("after up: %s", got)
	}
	run("0003_limits_notify.down.sql")
	run("0002_cache_publication.down.sql")
	if got := state(); got != "0 0 0" {
		t.Fatalf("after down: %s", got)
	}
	run("0002_cache_publication.up.sql")
	run("0003_limits_notify.up.sql")
	if got := state(); got != "1 2 1" {
		t.Fatalf("after up again: %s", got)
	}
}

// TestPropagationDelay measures, over 1,000 host changes made one after
// another, the time from a change's commit returning to the client to the
// cache having applied it (target: p99 under 20 ms on the project's
// machine). It is a benchmark: set CUESCHED_BENCH=1 to run it.
func TestPropagationDelay(t *testing.T) {
	if os.Getenv("CUESCHED_BENCH") == "" {
		t.Skip("benchmark: set CUESCHED_BENCH=1")
	}
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, seed.Stress(3, 1000, 0))
	h := newReplicaHarness(t, db, nil)
	var want atomic.Pointer[string] // "pk_host int_cores_idle" awaited
	seen := make(chan time.Time, 1)
	hook := func(e ReplicaEvent) {
		w := want.Load()
		if w == nil || e.Kind != EventStream || e.Stream.Kind != cdc.EventApplied {
			return
		}
		for _, c := range e.Stream.Txn.Changes {
			if c.Rel.Name == "host" && c.New.Get(c.Rel, "pk_host").Text+" "+c.New.Get(c.Rel, "int_cores_idle").Text == *w {
				seen <- time.Now()
			}
		}
	}
	h.hook.Store(&hook)
	h.start()
	hosts := slices.Sorted(maps.Values(s.Hosts))
	delays := make([]time.Duration, 0, 1000)
	ctx := context.Background()
	for i := range 1000 {
		host, idle := hosts[i%len(hosts)], int64(100+(i*7)%1500)
		key := fmt.Sprintf("%s %d", host, idle)
		want.Store(&key)
		if _, err := db.Pool.Exec(ctx, `UPDATE host SET int_cores_idle = $2 WHERE pk_host = $1`, host, idle); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		select {
		case at := <-seen:
			delays = append(delays, max(0, at.Sub(committed)))
		case <-time.After(30 * time.Second):
			t.Fatalf("change %d never applied", i)
		}
	}
	slices.Sort(delays)
	pct := func(p float64) time.Duration { return delays[int(p*float64(len(delays)-1))] }
	t.Logf("propagation over %d host changes: p50 %s, p90 %s, p99 %s, max %s", len(delays), pct(0.5), pct(0.9),
		pct(0.99), delays[len(delays)-1])
	if pct(0.99) >= 20*time.Millisecond {
		t.Errorf("propagation p99 %s, target under 20ms", pct(0.99))
	}
}
