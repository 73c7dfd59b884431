package cache

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// bookFrames books the job's frames Cuebot-style, round robin over the
// local hosts, and returns them in booking order.
func bookFrames(t *testing.T, db *pgtest.DB, sim *cuebotsim.Sim, hosts []string, frames []string) {
	t.Helper()
	for i, f := range frames {
		if _, err := sim.Book(context.Background(), f, hosts[i%len(hosts)], 100, gb, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLimitChangesReachMatching: a limit's max lowered and raised, and a
// layer newly linked to it, reach Caps without a restart, through the
// cuesched_limits notification (migration 0003) and cdc.Listener.
func TestLimitChangesReachMatching(t *testing.T) {
	db := pgtest.NewDB(t)
	s := loadFarm(t, db, smallFarm())
	h := newReplicaHarness(t, db, nil)
	l := cdc.NewListener(db.DSN, slog.New(slog.DiscardHandler))
	l.Handle(LimitsChannel, func(string) { h.r.LimitsChanged() })
	l.OnConnect(h.r.ReloadLimits)
	connected := l.Connected()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("listener did not stop")
		}
	})
	h.start()
	select {
	case <-connected:
	case <-time.After(60 * time.Second):
		t.Fatal("listener did not connect")
	}
	caps := h.r.Usage()
	lim, job := s.Limits["lic"], s.Jobs["job-a"]
	sim := newSim(db)
	bookFrames(t, db, sim, []string{s.Hosts[seed.LoopbackName(0)]}, []string{job.Frames["0001-comp"]})
	h.sync()
	if got, ok := caps.Limit(lim); !ok || got != (match.Limit{Running: 1, Max: 2}) {
		t.Fatalf("limit %+v %v, want 1 running of 2", got, ok)
	}
	limitIs := func(want match.Limit) func() bool {
		return func() bool { got, _ := caps.Limit(lim); return got == want }
	}
	h.exec(`UPDATE limit_record SET int_max_value = 1 WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the lowered max is seen", limitIs(match.Limit{Running: 1, Max: 1}))
	// A NULL max lets nothing run: Cuebot compares the running count with
	// it, which fails, and so does the booking's re-check.
	h.exec(`UPDATE limit_record SET int_max_value = NULL WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the NULL max is seen as 0", limitIs(match.Limit{Running: 1, Max: 0}))
	h.exec(`UPDATE limit_record SET int_max_value = 5 WHERE pk_limit_record = $1`, lim)
	h.waitUntil("the raised max is seen", limitIs(match.Limit{Running: 1, Max: 5}))

	render := job.Layers["render"]
	bookFrames(t, db, sim, []string{s.Hosts[seed.LoopbackName(1)]}, []string{job.Frames["0001-render"]})
	h.exec(`INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record) VALUES ('ll-new', $1, $2)`, render, lim)
	h.waitUntil("the new link is seen", func() bool {
		return limitIs(match.Limit{Running: 2, Max: 5})() && slices.Contains(caps.LayerLimits(render), lim)
	})
	h.exec(`DELETE FROM layer_limit WHERE pk_layer_limit = 'll-new'`)
	h.waitUntil("the removed link is seen", limitIs(match.Limit{Running: 1, Max: 5}))
	audittest.Clean(t, db.Pool)
}
