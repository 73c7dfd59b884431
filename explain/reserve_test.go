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
)

// With reservations on, explain says how long a layer's frames are
// expected to run (Cuebot's layer_usage, else job_usage) and what that
// means for backfill; unknown, they never backfill.
func TestExpectedRunIsExplained(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.NewDB(t)
	farm := &seed.Farm{
		Hosts: []seed.Host{{Name: "127.13.2.1", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.general", Size: 1600, Burst: 1600}}}},
		Jobs: []seed.Job{{Name: "sim", Show: "film", Layers: []seed.Layer{
			{Name: "r", Frames: 2, Cores: 100, Mem: seed.GB, Tags: "general"}}}},
	}
	s, err := seed.Load(ctx, db.Pool, farm, 1)
	if err != nil {
		t.Fatal(err)
	}
	read := func(on bool) (explain.Layer, string) {
		t.Helper()
		tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		rep, err := explain.Read(ctx, tx, explain.Options{Job: "sim", Reservations: on})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		rep.Print(&out)
		return rep.Layers[0], out.String()
	}
	if l, out := read(true); l.Run == nil || l.Run.Seconds != 0 || !strings.Contains(out, "expected run unknown") {
		t.Errorf("no frame finished: run %+v, printed:\n%s", l.Run, out)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE layer_usage SET int_clock_time_success = 5400, int_frame_success_count = 2
		WHERE pk_layer = $1`, s.Jobs["sim"].Layers["r"]); err != nil {
		t.Fatal(err)
	}
	l, out := read(true)
	if l.Run == nil || l.Run.Seconds != 2700 || l.Run.From != "layer" ||
		!strings.Contains(out, "expected run 45m0s (the mean of its layer's finished frames)") {
		t.Errorf("two frames finished in 90 minutes: run %+v, printed:\n%s", l.Run, out)
	}
	if l, out := read(false); l.Run != nil || strings.Contains(out, "expected run") {
		t.Errorf("reservations off: run %+v, printed:\n%s", l.Run, out)
	}

	// Which reservation holds the host, and whether r's frames backfill it.
	var cl int32
	if err := db.Pool.QueryRow(ctx, `INSERT INTO cuesched.cluster (key, kind, facility, bucket) VALUES ('t', 2, 'f', 0)
		RETURNING id`).Scan(&cl); err != nil {
		t.Fatal(err)
	}
	reserve := func(layer, in string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `DELETE FROM cuesched.reservation`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO cuesched.reservation (host_id, host_name, layer_id, layer_name,
			starts_at, cluster_id, owner, epoch) SELECT pk_host, str_name, $1, 'wide', now() + $2::interval, $3, 1, 1 FROM host`,
			layer, in, cl); err != nil {
			t.Fatal(err)
		}
	}
	reserve("wide", "2 hours")
	if l, out := read(true); len(l.Placements) != 2 || !strings.Contains(out, "backfilled on host 127.13.2.1, reserved for layer wide") {
		t.Errorf("a 45-minute run, the host reserved in 2 hours: placements %+v, printed:\n%s", l.Placements, out)
	}
	reserve("wide", "10 minutes")
	if l, out := read(true); len(l.Placements) != 0 || l.Reason != "capacity" ||
		!strings.Contains(l.Detail, "not backfilled: its expected run 45m0s (layer mean) ends after") {
		t.Errorf("the host reserved in 10 minutes: placements %+v, wait %s %s, printed:\n%s", l.Placements, l.Reason, l.Detail, out)
	}
	reserve(s.Jobs["sim"].Layers["r"], "0 seconds")
	if l, out := read(true); len(l.Placements) != 2 || len(l.Reserved) != 1 ||
		!strings.Contains(out, "host 127.13.2.1 reserved for it from") || !strings.Contains(out, "reserved for this layer") {
		t.Errorf("the host reserved for r: placements %+v, printed:\n%s", l.Placements, out)
	}
}
