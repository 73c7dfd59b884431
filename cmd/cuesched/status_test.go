package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/status"
)

// `cuesched status` over a small stress farm whose allocation clusters one
// live instance owns: the JSON parses and agrees with the database, and the
// table names every cluster and flags the unowned ones.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	s, err := seed.Load(ctx, db.Pool, seed.Stress(3, 24, 6), 3)
	if err != nil {
		t.Fatal(err)
	}
	var id int32
	if err := db.Pool.QueryRow(ctx, `INSERT INTO cuesched.instance (name, host_name, pid, app_name, lease_until)
		VALUES ('farm-a', 'mgr1', 99, 'cuesched-farm-a', now() + interval '1 minute') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, cluster.LivenessLock, id); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"local.stress_a", "local.stress_b", "local.stress_c"} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO cuesched.cluster (key, kind, facility, alloc, owner)
			SELECT 'alloc/' || pk_alloc, 1, pk_facility, pk_alloc, $2 FROM alloc WHERE pk_alloc = $1`, s.Allocs[name], id); err != nil {
			t.Fatal(err)
		}
	}
	var layers int
	var frames int64
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(ls.int_waiting_count), 0)
		FROM layer_stat ls JOIN job j ON j.pk_job = ls.pk_job JOIN show s ON s.pk_show = j.pk_show
		WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND s.b_scheduler_managed`).Scan(&layers, &frames); err != nil {
		t.Fatal(err)
	}

	code, out := cli(t, nil, "status", "--json", "--db", db.URL)
	if code != 0 {
		t.Fatalf("status --json exited %d: %s", code, out)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json is not a report: %v\n%s", err, out)
	}
	if r.Layers != layers || r.Frames != frames || layers == 0 {
		t.Errorf("report has %d layers %d frames, the database %d and %d", r.Layers, r.Frames, layers, frames)
	}
	var sum int64
	owned := 0
	for _, c := range r.Clusters {
		sum += c.Waiting
		if !c.Unowned {
			owned++
			if c.Owner != id || c.OwnerName != "farm-a" {
				t.Errorf("cluster %s owned by %d %q", c.Key, c.Owner, c.OwnerName)
			}
		}
	}
	// Stress layers carry one tag each, so every layer is in one cluster.
	if sum != frames || owned != 3 {
		t.Errorf("clusters hold %d frames (want %d), %d owned (want 3)", sum, frames, owned)
	}
	if len(r.Instances) != 1 || !r.Instances[0].Live || r.Instances[0].Clusters != 3 {
		t.Errorf("instances: %+v", r.Instances)
	}

	code, out = cli(t, map[string]string{"CUESCHED_DB": db.URL}, "status")
	if code != 0 {
		t.Fatalf("status exited %d: %s", code, out)
	}
	for _, c := range r.Clusters {
		if !strings.Contains(out, c.Key) {
			t.Errorf("the table does not name cluster %s:\n%s", c.Key, out)
		}
	}
	for _, want := range []string{"INSTANCES", "farm-a", "CLUSTERS", "local.stress_a", "UNOWNED", "WAITING IN"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}

	if code, out := cli(t, nil, "status", "--help"); code != 0 || !strings.Contains(out, "-json") {
		t.Errorf("status --help exited %d:\n%s", code, out)
	}
	if code, _ := cli(t, nil, "status", "--frobnicate"); code != 2 {
		t.Errorf("status --frobnicate exited %d, want 2", code)
	}
}

// A running instance publishes its replication lag and why a layer that
// fits no host waits, and `cuesched status` shows both.
func TestStatusOfRunningInstance(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	farm := seed.Stress(4, 24, 4)
	farm.Jobs = append(farm.Jobs, seed.Job{Name: "too-big", Show: farm.Shows[0].Name, Priority: 100,
		Layers: []seed.Layer{{Name: "sim", Frames: 2, Cores: 100, Mem: 4096 * seed.GB, Tags: farm.Allocations[0].Tag}}})
	s, err := seed.Load(t.Context(), db.Pool, farm, 4)
	if err != nil {
		t.Fatal(err)
	}
	big := s.Jobs["too-big"].Layers["sim"]
	run := startRun(t, db)
	// Across the process boundary the database is the only signal.
	waitFor(t, time.Minute, "the instance to publish why the big layer waits", func() bool {
		run.alive(t)
		var n int
		if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM cuesched.cluster_wait w, cuesched.instance i
			WHERE i.id = w.instance AND i.reported_at IS NOT NULL AND w.waits @> jsonb_build_array(jsonb_build_object('layer', $1::text))`,
			big).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	code, js := cli(t, nil, "status", "--json", "--db", db.URL)
	if code != 0 {
		t.Fatalf("status --json exited %d: %s", code, js)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Instances) != 1 || !r.Instances[0].Live || r.Instances[0].LagBytes == nil || r.Instances[0].Applied == "" ||
		r.Instances[0].Clusters == 0 {
		t.Errorf("instances: %s", js)
	}
	found := false
	for _, c := range r.Clusters {
		for _, l := range c.Layers {
			if l.ID == big {
				found = true
				if l.Reason == "" || c.Unowned || l.Waiting != 2 {
					t.Errorf("the big layer in %s (unowned %v): %+v", c.Key, c.Unowned, l)
				}
			}
		}
	}
	if !found {
		t.Errorf("the big layer is not in the report: %s", js)
	}
	run.stop(t)
}
