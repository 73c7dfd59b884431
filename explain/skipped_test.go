package explain_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/explain"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// A layer the pending-layer queue skips (no tags, a negative minimum: issue
// 12) is explained as skipped, with what is wrong, not as a wait matching
// would give; the job's other layers are planned as usual.
func TestSkippedLayersAreExplained(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	one := func(name string) seed.Layer {
		return seed.Layer{Name: name, Frames: 1, Cores: 100, Mem: seed.GB, Tags: "general"}
	}
	farm := &seed.Farm{
		Hosts: []seed.Host{{Name: "127.13.0.1", Alloc: "local.general", Cores: 800, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 1000, Burst: 1000}}}},
		Jobs: []seed.Job{{Name: "odd", Show: "film", Layers: []seed.Layer{one("ok"), one("notags"), one("neggpus")}}},
	}
	s, err := seed.Load(ctx, db.Pool, farm, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls := s.Jobs["odd"].Layers
	if _, err := db.Pool.Exec(ctx, `UPDATE layer SET str_tags = ' | ' WHERE pk_layer = $1`, ls["notags"]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE layer SET int_gpus_min = -1 WHERE pk_layer = $1`, ls["neggpus"]); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rep, err := explain.Read(ctx, tx, explain.Options{Job: "odd"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]explain.Layer{}
	for _, l := range rep.Layers {
		got[l.Name] = l
	}
	if l := got["ok"]; l.Outcome != "book" || len(l.Placements) != 1 {
		t.Errorf("layer ok: %s with %d placements, want it booked", l.Outcome, len(l.Placements))
	}
	for name, want := range map[string]string{"notags": "no-tags: str_tags", "neggpus": "negative-minimum: int_mem_min"} {
		l := got[name]
		if l.Outcome != "wait" || l.Reason != explain.ReasonSkipped || !strings.HasPrefix(l.Detail, want) ||
			len(l.Placements) != 0 {
			t.Errorf("layer %s: %s, reason %q, detail %q, %d placements; want a wait for %s, detail %q...", name,
				l.Outcome, l.Reason, l.Detail, len(l.Placements), explain.ReasonSkipped, want)
		}
	}
}
