package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// `cuesched run --reservations`: a layer of whole-host frames waiting
// behind one-core frames that fill the farm reserves a host in the
// database (cuesched.reservation), written by the owner of its cluster, and
// `cuesched status` counts it. Nothing finished, so its start is unknown.
func TestRunReserves(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	farm := &seed.Farm{
		Hosts: []seed.Host{{Name: "127.14.0.1", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB},
			{Name: "127.14.0.2", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 6400, Burst: 6400}}}},
		Jobs: []seed.Job{
			{Name: "film-narrow", Show: "film", Priority: 100, Layers: []seed.Layer{
				{Name: "n", Frames: 20, Cores: 100, Mem: seed.GB, Tags: "general"}}},
			{Name: "film-wide", Show: "film", Priority: 1, Layers: []seed.Layer{
				{Name: "w", Frames: 1, Cores: 1600, Mem: 8 * seed.GB, Threadable: true, Tags: "general"}}},
		},
	}
	s, err := seed.Load(t.Context(), db.Pool, farm, 1)
	if err != nil {
		t.Fatal(err)
	}
	wide := s.Jobs["film-wide"].Layers["w"]
	run := startRun(t, db, "--reservations", "--reservation-after", "0s")
	waitFor(t, 2*time.Minute, "the wide layer's reservation", func() bool {
		run.alive(t)
		var n int
		if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM cuesched.reservation r
			JOIN cuesched.cluster c ON c.id = r.cluster_id AND c.owner = r.owner AND c.epoch = r.epoch
			WHERE r.layer_id = $1 AND r.starts_at IS NULL`, wide).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	code, out := cli(t, nil, "status", "--db", db.DSN)
	if code != 0 || !strings.Contains(out, "reserved hosts: 1, for 1 layers") {
		t.Errorf("status exited %d:\n%s", code, out)
	}
	run.stop(t)
	audittest.Clean(t, db.Pool)
}
