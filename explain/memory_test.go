package explain_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/explain"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

// Explain says why this size (memory from history): the memory a frame
// would be booked with, trimmed from the request by what the layer's
// finished frames used, or why not; the dry plan books with it.
func TestMemoryFromHistoryIsExplained(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	farm := &seed.Farm{
		Hosts: []seed.Host{{Name: "127.13.1.1", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 1600, Burst: 1600}}}},
		Jobs: []seed.Job{{Name: "sim", Show: "film", Layers: []seed.Layer{
			{Name: "r", Frames: 8, Cores: 100, Mem: 30 * seed.GB, Tags: "general"}}}},
	}
	s, err := seed.Load(ctx, db.Pool, farm, 1)
	if err != nil {
		t.Fatal(err)
	}
	layer := s.Jobs["sim"].Layers["r"]
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE frame SET str_state = 'SUCCEEDED', int_exit_status = 0 WHERE pk_frame IN (
		SELECT pk_frame FROM frame WHERE pk_layer = $1 ORDER BY int_dispatch_order, int_layer_order LIMIT 4)`, layer)
	exec(`UPDATE layer_mem SET int_max_rss = $2 WHERE pk_layer = $1`, layer, 10*seed.GB)
	read := func(m match.Memory) (explain.Layer, string) {
		t.Helper()
		tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		rep, err := explain.Read(ctx, tx, explain.Options{Job: "sim", Memory: m})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		rep.Print(&out)
		return rep.Layers[0], out.String()
	}
	on := match.Memory{Shows: []string{"film"}, Headroom: 0.2}

	l, out := read(on)
	want := "memory 12.0 GB (trimmed from 30.0 GB: its 4 finished frames used at most 10.0 GB)"
	if !strings.Contains(out, want) || l.Memory == nil || !l.Memory.Trimmed || l.Memory.Mem != 12*seed.GB ||
		len(l.Placements) != 4 || l.Placements[0].Size.Mem != 12*seed.GB {
		t.Errorf("memory %+v, %d placements; want %q and the 4 waiting frames booked with it:\n%s",
			l.Memory, len(l.Placements), want, out)
	}
	// Off for the show: nothing said, the request booked.
	l, out = read(match.Memory{})
	if strings.Contains(out, "trimmed") || l.Memory != nil || len(l.Placements) != 2 {
		t.Errorf("with the setting off: memory %+v, %d placements; want none said and 2 booked:\n%s", l.Memory, len(l.Placements), out)
	}
	// A frame killed for its memory, WAITING again: the request stands.
	exec(`UPDATE frame SET int_exit_status = 33 WHERE pk_frame = (
		SELECT pk_frame FROM frame WHERE pk_layer = $1 AND str_state = 'WAITING' LIMIT 1)`, layer)
	l, out = read(on)
	want = "memory 30.0 GB (not trimmed: a frame of the layer was killed for its memory)"
	if !strings.Contains(out, want) || l.Memory == nil || l.Memory.Trimmed || !l.Memory.MemFailed || len(l.Placements) != 2 {
		t.Errorf("after a memory failure: memory %+v, %d placements; want %q and 2 booked:\n%s", l.Memory, len(l.Placements), want, out)
	}
}
