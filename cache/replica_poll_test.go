package cache

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// TestPollWithoutLogicalReplication: on a server with wal_level = replica,
// as a role without REPLICATION, a polling replica loads the hosts and sees
// a host's capacity freed by a Cuebot-style release at a following poll
// (and reports that host as grown, with no topology change). What the polls
// report for the counters is counters.TestCountersWithPolling.
func TestPollWithoutLogicalReplication(t *testing.T) {
	c := pgtest.NewCluster(t, pgcluster.Options{Settings: map[string]string{"wal_level": "replica"}})
	db := pgtest.NewDBIn(t, c)
	s := loadFarm(t, db, smallFarm())
	sim := newSim(db)
	job := s.Jobs["job-a"]
	host := s.Hosts[seed.LoopbackName(0)]
	bookFrames(t, db, sim, []string{host}, []string{job.Frames["0001-render"], job.Frames["0002-render"]})

	dsn := pgtest.PlainRole(t, db, "cuesched_poll")
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	var mu sync.Mutex
	type wake struct {
		grown []string
		topo  bool
	}
	var wakes []wake
	h := newReplicaHarness(t, db, func(c *ReplicaConfig) {
		c.DSN, c.Pool = dsn, pool
		c.Feed, c.PollEvery = "poll", 100*time.Millisecond
		c.OnHosts = func(grown []match.Host, topo bool) {
			w := wake{topo: topo}
			for _, g := range grown {
				w.grown = append(w.grown, g.ID)
			}
			mu.Lock()
			wakes = append(wakes, w)
			mu.Unlock()
		}
	})
	h.failFast = true
	h.start()
	if n := h.slots(); n != 0 {
		t.Fatalf("%d replication slots", n)
	}
	before, ok := h.r.Hosts().Host(host)
	if !ok || h.r.Hosts().Len() != 8 {
		t.Fatalf("host %s loaded: %v; %d hosts, want 8", host, ok, h.r.Hosts().Len())
	}
	mu.Lock()
	wakes = nil
	mu.Unlock()

	if err := sim.Succeed(context.Background(), job.Frames["0001-render"]); err != nil {
		t.Fatal(err)
	}
	h.waitUntil("the release's capacity seen", func() bool {
		hst, _ := h.r.Hosts().Host(host)
		return hst.Idle.Cores > before.Idle.Cores
	})
	// The poll that saw it has reported the hosts once it is done.
	n := h.loads.Load()
	h.waitUntil("one more poll", func() bool { return h.loads.Load() > n })
	mu.Lock()
	defer mu.Unlock()
	var grew bool
	for _, w := range wakes {
		if w.topo || len(w.grown) > 1 {
			t.Errorf("a poll reported grown hosts %v, topology %v: want only the released host", w.grown, w.topo)
		}
		grew = grew || slices.Contains(w.grown, host)
	}
	if !grew {
		t.Errorf("no poll reported host %s grown (wakes %+v)", host, wakes)
	}
	var m dto.Metric
	if err := h.r.metrics.Stream.Connected.Write(&m); err != nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("cuesched_replication_connected %v (%v) after successful polls, want 1", m.GetGauge().GetValue(), err)
	}
}
