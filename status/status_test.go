package status

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// counting counts the statements a publisher runs.
type counting struct {
	pool *pgxpool.Pool
	n    atomic.Int64
}

func (c *counting) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	c.n.Add(1)
	return c.pool.Exec(ctx, sql, args...)
}

func addInstance(t *testing.T, pool *pgxpool.Pool, name string) int32 {
	t.Helper()
	var id int32
	err := pool.QueryRow(t.Context(), `INSERT INTO cuesched.instance (name, host_name, pid, app_name, lease_until)
		VALUES ($1, 'render-mgr', 4242, 'cuesched-'||$1, now() + interval '10 seconds') RETURNING id`, name).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func addCluster(t *testing.T, pool *pgxpool.Pool, k cluster.Key, owner int32) int32 {
	t.Helper()
	var id int32
	var alloc, bucket any
	kind := 2
	if k.Kind == cluster.KindAlloc {
		kind, alloc = 1, k.Alloc
	} else {
		bucket = k.Bucket
	}
	var o any
	if owner != 0 {
		o = owner
	}
	err := pool.QueryRow(t.Context(), `INSERT INTO cuesched.cluster (key, kind, facility, alloc, bucket, owner)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, k.String(), kind, k.Facility, alloc, bucket, o).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// fakeSource is an instance whose claims, waits and lag the test sets.
type fakeSource struct {
	mu    sync.Mutex
	id    int32
	owned []Owned
	waits map[cluster.Key][]match.Wait
	rep   Replication
}

func (f *fakeSource) source() Source {
	return Source{
		Instance: func() (int32, []Owned) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.id, append([]Owned(nil), f.owned...)
		},
		Waits: func(k cluster.Key) []match.Wait {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.waits[k]
		},
		Replication: func() Replication {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.rep
		},
	}
}

func (f *fakeSource) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func TestPublisherWritesOnlyWhatChanged(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := t.Context()
	id := addInstance(t, db.Pool, "a")
	k1 := cluster.Key{Kind: cluster.KindTags, Facility: "f1", Bucket: 1}
	k2 := cluster.Key{Kind: cluster.KindTags, Facility: "f1", Bucket: 2}
	c1, c2 := addCluster(t, db.Pool, k1, id), addCluster(t, db.Pool, k2, id)

	src := &fakeSource{waits: map[cluster.Key][]match.Wait{}}
	exec := &counting{pool: db.Pool}
	tick := make(chan time.Time)
	rounds := make(chan Round)
	p := NewPublisher(PublisherConfig{DB: exec, Source: src.source(), MaxWaits: 2, Tick: tick,
		Observe: func(r Round) { rounds <- r }})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	round := func(what string) Round {
		t.Helper()
		select {
		case tick <- time.Now():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: publisher took no tick", what)
		}
		select {
		case r := <-rounds:
			if r.Err != nil {
				t.Fatalf("%s: %v", what, r.Err)
			}
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no round", what)
		}
		return Round{}
	}
	expect := func(what string, r Round, wrote bool, written, removed int) {
		t.Helper()
		if r.Wrote != wrote || r.Written != written || r.Removed != removed {
			t.Errorf("%s: round %+v, want wrote %v written %d removed %d", what, r, wrote, written, removed)
		}
	}
	layer := func(n int) *match.Layer {
		return &match.Layer{ID: fmt.Sprintf("layer-%d", n), Name: fmt.Sprintf("render%d", n), JobName: "shot010", Waiting: int64(n)}
	}

	expect("not registered", round("not registered"), false, 0, 0)
	if n := exec.n.Load(); n != 0 {
		t.Fatalf("%d statements before the instance registered", n)
	}

	src.set(func() {
		src.id = id
		src.owned = []Owned{{ID: c1, Key: k1}, {ID: c2, Key: k2}}
		src.rep = Replication{Applied: cdc.LSN(0x1000), LagBytes: 100}
	})
	expect("registered", round("registered"), true, 0, 0)
	var applied string
	var lag int64
	if err := db.Pool.QueryRow(ctx, `SELECT applied_lsn::text, lag_bytes FROM cuesched.instance WHERE id = $1`, id).
		Scan(&applied, &lag); err != nil {
		t.Fatal(err)
	}
	if applied != "0/1000" || lag != 100 {
		t.Errorf("instance row has applied %s lag %d, want 0/1000 and 100", applied, lag)
	}

	// Idle: nothing changed, or only noise in the lag and a moved position.
	expect("idle", round("idle"), false, 0, 0)
	src.set(func() { src.rep = Replication{Applied: cdc.LSN(0x2000), LagBytes: 300} })
	expect("lag noise", round("lag noise"), false, 0, 0)
	if n := exec.n.Load(); n != 1 {
		t.Errorf("%d statements, want 1 (the first report only)", n)
	}

	src.set(func() {
		src.waits[k1] = []match.Wait{{Layer: layer(1), Reason: match.ReasonCapacity, Detail: "no idle cores"},
			{Layer: layer(2), Reason: match.ReasonCap}, {Layer: layer(3), Reason: match.ReasonNoFit}}
	})
	expect("waits", round("waits"), true, 1, 0)
	var doc string
	var more int
	if err := db.Pool.QueryRow(ctx, `SELECT waits::text, more FROM cuesched.cluster_wait WHERE cluster = $1 AND instance = $2`,
		c1, id).Scan(&doc, &more); err != nil {
		t.Fatal(err)
	}
	var got []Wait
	if err := json.Unmarshal([]byte(doc), &got); err != nil {
		t.Fatal(err)
	}
	want := []Wait{{Layer: "layer-1", Name: "render1", Job: "shot010", Reason: "capacity", Detail: "no idle cores", Waiting: 1},
		{Layer: "layer-2", Name: "render2", Job: "shot010", Reason: "cap", Waiting: 2}}
	if fmt.Sprint(got) != fmt.Sprint(want) || more != 1 {
		t.Errorf("published %v more %d, want %v more 1", got, more, want)
	}
	expect("unchanged waits", round("unchanged waits"), false, 0, 0)

	src.set(func() {
		src.waits[k2] = []match.Wait{{Layer: layer(4), Reason: match.ReasonNoHost}}
		src.rep.LagBytes = 10 << 20
	})
	expect("second cluster and real lag", round("second cluster"), true, 1, 0)

	// A lost cluster's reasons go, even though the loop still remembers them.
	src.set(func() { src.owned = []Owned{{ID: c2, Key: k2}} })
	expect("lost cluster", round("lost cluster"), true, 0, 1)
	var rows int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.cluster_wait WHERE cluster = $1`, c1).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("the lost cluster still has %d rows of reasons", rows)
	}
	src.set(func() { delete(src.waits, k2) })
	expect("all found room", round("all found room"), true, 0, 1)
	expect("idle again", round("idle again"), false, 0, 0)
	if n := exec.n.Load(); n != 5 {
		t.Errorf("%d statements, want 5", n)
	}
}

// holdLiveness makes an instance live the way ownership does: a session
// holding its liveness lock.
func holdLiveness(t *testing.T, pool *pgxpool.Pool, id int32) {
	t.Helper()
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Release() })
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_lock($1, $2)`, cluster.LivenessLock, id); err != nil {
		t.Fatal(err)
	}
}

func TestReadGroupsPendingWorkByCluster(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := t.Context()
	if _, err := db.Pool.Exec(ctx, `UPDATE cuesched.setting SET value = '1' WHERE name = 'tag_buckets'`); err != nil {
		t.Fatal(err)
	}
	farm := &seed.Farm{
		Allocations: []seed.Allocation{{Name: "local.a", Tag: "a"}, {Name: "local.b", Tag: "b"}},
		Hosts: []seed.Host{
			{Name: "127.0.0.1", Alloc: "local.a", Cores: 800, Mem: 16 * seed.GB, ManualTags: []string{"fx"}},
			{Name: "127.0.0.2", Alloc: "local.b", Cores: 800, Mem: 16 * seed.GB},
		},
		Shows: []seed.Show{
			{Name: "prod", Managed: true, Subscriptions: []seed.Subscription{
				{Alloc: "local.a", Size: 1000, Burst: 1000}, {Alloc: "local.b", Size: 1000, Burst: 1000}}},
			{Name: "legacy", Subscriptions: []seed.Subscription{{Alloc: "local.a", Size: 1000, Burst: 1000}}},
		},
		Jobs: []seed.Job{
			{Name: "prod-shot010", Show: "prod", Priority: 50, Layers: []seed.Layer{
				{Name: "render", Frames: 3, Cores: 100, Mem: seed.GB, Tags: "a"},
				{Name: "comp", Frames: 2, Cores: 100, Mem: seed.GB, Tags: "fx"},
				{Name: "after", Frames: 2, Cores: 100, Mem: seed.GB, Tags: "a", Depend: true}}},
			{Name: "prod-shot020", Show: "prod", Priority: 10, Layers: []seed.Layer{
				{Name: "sim", Frames: 4, Cores: 100, Mem: seed.GB, Tags: "b"}}},
			{Name: "legacy-shot", Show: "legacy", Layers: []seed.Layer{
				{Name: "render", Frames: 5, Cores: 100, Mem: seed.GB, Tags: "a"}}},
		},
	}
	s, err := seed.Load(ctx, db.Pool, farm, 1)
	if err != nil {
		t.Fatal(err)
	}
	var local, cloudAlloc, cloud string
	if err := db.Pool.QueryRow(ctx, `SELECT a.pk_facility, c.pk_alloc, c.pk_facility FROM alloc a, alloc c
		WHERE a.pk_alloc = $1 AND c.str_name = 'cloud.general'`, s.Allocs["local.a"]).Scan(&local, &cloudAlloc, &cloud); err != nil {
		t.Fatal(err)
	}
	live, dead := addInstance(t, db.Pool, "live"), addInstance(t, db.Pool, "dead")
	holdLiveness(t, db.Pool, live)
	ka := cluster.Key{Kind: cluster.KindAlloc, Facility: local, Alloc: s.Allocs["local.a"]}
	kb := cluster.Key{Kind: cluster.KindAlloc, Facility: local, Alloc: s.Allocs["local.b"]}
	kt := cluster.Key{Kind: cluster.KindTags, Facility: local, Bucket: 0}
	kc := cluster.Key{Kind: cluster.KindAlloc, Facility: cloud, Alloc: cloudAlloc}
	ca := addCluster(t, db.Pool, ka, live)
	addCluster(t, db.Pool, kt, dead)
	addCluster(t, db.Pool, kc, 0)
	// kb has no row: its work shows as unowned.
	render := s.Jobs["prod-shot010"].Layers["render"]
	if _, err := db.Pool.Exec(ctx, `INSERT INTO cuesched.cluster_wait (cluster, instance, waits) VALUES ($1, $2, $3)`,
		ca, live, fmt.Sprintf(`[{"layer": %q, "name": "render", "job": "prod-shot010", "reason": "capacity", "detail": "8 cores idle", "waiting": 3}]`, render)); err != nil {
		t.Fatal(err)
	}
	// The owner of ka reserved both hosts for render.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO cuesched.reservation (host_id, host_name, layer_id, layer_name, cluster_id, owner, epoch)
		SELECT pk_host, str_name, $1, 'render', $2, $3, 0 FROM host`, render, ca, live); err != nil {
		t.Fatal(err)
	}

	r, err := Read(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reserved != 2 || r.ReservedLayers != 1 {
		t.Errorf("%d hosts reserved for %d layers, want 2 for 1", r.Reserved, r.ReservedLayers)
	}
	for _, c := range r.Clusters {
		if want := map[bool]int{true: 2}[c.ID == ca]; c.Reserved != want {
			t.Errorf("cluster %s: %d hosts reserved, want %d", c.Key, c.Reserved, want)
		}
	}
	if r.Layers != 3 || r.Frames != 9 || r.Unowned != 3 {
		t.Errorf("report totals: %d layers, %d frames, %d unowned; want 3, 9, 3", r.Layers, r.Frames, r.Unowned)
	}
	if len(r.Instances) != 2 || !r.Instances[0].Live || r.Instances[1].Live || r.Instances[0].Clusters != 1 ||
		r.Instances[0].Name != "live" || r.Instances[0].Host != "render-mgr" || r.Instances[0].PID != 4242 {
		t.Errorf("instances: %+v", r.Instances)
	}
	byKey := map[string]Cluster{}
	for _, c := range r.Clusters {
		byKey[c.Key] = c
	}
	for _, tc := range []struct {
		key              cluster.Key
		registered       bool
		unowned          bool
		pending          int
		waiting          int64
		alloc, allocName string
	}{
		{ka, true, false, 1, 3, "a", "local.a"},
		{kb, false, true, 1, 4, "b", "local.b"},
		{kt, true, true, 1, 2, "", ""},
		{kc, true, true, 0, 0, "", "cloud.general"},
	} {
		c, ok := byKey[tc.key.String()]
		if !ok {
			t.Errorf("cluster %s missing from %+v", tc.key, r.Clusters)
			continue
		}
		if (c.ID != 0) != tc.registered || c.Unowned != tc.unowned || c.Pending != tc.pending || c.Waiting != tc.waiting ||
			c.Alloc != tc.allocName || c.Facility == "" {
			t.Errorf("cluster %s: %+v, want registered %v unowned %v pending %d waiting %d alloc %q",
				tc.key, c, tc.registered, tc.unowned, tc.pending, tc.waiting, tc.allocName)
		}
	}
	a := byKey[ka.String()]
	if a.OwnerName != "live" || len(a.Layers) != 1 || a.Layers[0].ID != render || a.Layers[0].Reason != "capacity" ||
		a.Layers[0].Detail != "8 cores idle" || a.Layers[0].Job != "prod-shot010" || a.Layers[0].Priority != 50 ||
		a.ReasonsBy != live || a.ReasonsAt == nil {
		t.Errorf("allocation cluster a: %+v", a)
	}
	if c := byKey[kt.String()]; len(c.Layers) != 1 || c.Layers[0].Name != "comp" || c.Layers[0].Reason != "" {
		t.Errorf("tag cluster: %+v", c)
	}
	if r.WAL == "" || r.At.IsZero() || r.Buckets != "1" {
		t.Errorf("report header: at %v wal %q buckets %q", r.At, r.WAL, r.Buckets)
	}
}

// TestPublisherReportsRefusedCounterRows: the counter rows Cuebot's guard
// refuses an instance reach `cuesched status`, written when they change only.
func TestPublisherReportsRefusedCounterRows(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := t.Context()
	id := addInstance(t, db.Pool, "a")
	var mu sync.Mutex
	var refused []Refused
	exec := &counting{pool: db.Pool}
	p := NewPublisher(PublisherConfig{DB: exec, Source: Source{
		Instance: func() (int32, []Owned) { return id, nil },
		Waits:    func(cluster.Key) []match.Wait { return nil },
		Refused: func() []Refused {
			mu.Lock()
			defer mu.Unlock()
			return refused
		},
	}})
	read := func() []Refused {
		t.Helper()
		r, err := Read(ctx, db.Pool)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range r.Instances {
			if in.ID == id {
				return in.Refused
			}
		}
		t.Fatalf("instance %d not in the report", id)
		return nil
	}
	round := func(what string, wrote bool) {
		t.Helper()
		if r := p.round(ctx); r.Err != nil || r.Wrote != wrote {
			t.Fatalf("%s: round %+v, want wrote %v", what, r, wrote)
		}
	}
	round("first", true)
	if got := read(); len(got) != 0 {
		t.Fatalf("refused %+v before any", got)
	}
	want := []Refused{{Table: "subscription", Key: "sub-1", Err: "subscription sub-1 has exceeded its burst"}}
	mu.Lock()
	refused = want
	mu.Unlock()
	round("refused", true)
	if got := read(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("status shows refused %+v, want %+v", got, want)
	}
	round("unchanged", false)
	mu.Lock()
	refused = nil
	mu.Unlock()
	round("brought back", true)
	if got := read(); len(got) != 0 {
		t.Fatalf("refused %+v after they were brought back", got)
	}
	if n := exec.n.Load(); n != 3 {
		t.Errorf("%d statements, want 3", n)
	}
}
