package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/queue"
)

// TestFramesReadByTheLayersIndex: a layer's frames are read by the layer's
// index, whatever the planner's statistics say, in the plan of one read and
// in the generic plan a connection caches after five. Statistics taken
// before a burst of submissions (or none at all, after pg_upgrade or a
// restore) make WAITING look rare, and PostgreSQL then ANDed the layer's
// index with every WAITING entry of frame's state index, once for each
// layer read (every waiting frame of the farm walked once a layer), and
// looked for frames killed for their memory by scanning frame whole.
func TestFramesReadByTheLayersIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	// The statistics of a farm with no waiting frame, kept while the
	// submissions below arrive.
	for _, sql := range []string{`ALTER TABLE frame SET (autovacuum_enabled = false)`, `ANALYZE frame`} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var ids []string
	for i := range 4 {
		var layers []seed.Layer
		for l := range 10 {
			layers = append(layers, seed.Layer{Name: fmt.Sprintf("l%02d", l), Frames: 150, Cores: 100, Mem: seed.GB})
		}
		k := launch(t, s, job(fmt.Sprintf("burst%d", i), layers...))
		for _, id := range k.Layers {
			ids = append(ids, id)
		}
	}

	// The plan of one read, and the generic plan a connection caches after
	// five: both must hold. Every show booked from history and no minimum
	// of finished frames, so the plan looks for frames killed for their
	// memory too.
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var custom, generic string
	if err := conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+queue.FramesQuery, ids, nil, []string{"*"}, 0).
		Scan(&custom); err != nil {
		t.Fatalf("explain the frames read: %v", err)
	}
	for _, sql := range []string{`PREPARE frames(text[], int, text[], int) AS ` + queue.FramesQuery,
		`SET plan_cache_mode = force_generic_plan`} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%.40s: %v", sql, err)
		}
	}
	// EXECUTE takes no parameters of its own: the keys are a literal.
	if err := conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) EXECUTE frames('{`+strings.Join(ids, ",")+`}', NULL, '{*}', 0)`).
		Scan(&generic); err != nil {
		t.Fatalf("explain the frames read's generic plan: %v", err)
	}
	for name, plan := range map[string]string{"the plan": custom, "the generic plan": generic} {
		var nodes []struct{ Plan planNode }
		if err := json.Unmarshal([]byte(plan), &nodes); err != nil || len(nodes) != 1 {
			t.Fatalf("read %s: %v\n%s", name, err, plan)
		}
		var frameIndexes []string
		wholeScans := 0
		var walk func(n planNode)
		walk = func(n planNode) {
			switch {
			case slices.Contains(frameIndexNames, n.Index):
				frameIndexes = append(frameIndexes, n.Index)
			case n.Type == "Seq Scan" && n.Relation == "frame":
				wholeScans++
			}
			for _, c := range n.Plans {
				walk(c)
			}
		}
		walk(nodes[0].Plan)
		onlyBy := func(used []string, index string) bool {
			return len(used) > 0 && !slices.ContainsFunc(used, func(s string) bool { return s != index })
		}
		if !onlyBy(frameIndexes, "i_frame_pkjoblayer") || wholeScans != 0 {
			t.Errorf("%s reads frame by %q and %d times whole; want it read only by the layer's index "+
				"(i_frame_pkjoblayer):\n%s", name, frameIndexes, wholeScans, plan)
		}
	}
}

// frameIndexNames are the indexes Cuebot's schema puts on frame.
var frameIndexNames = []string{"i_frame_depend_candidates", "i_frame_dispatch_idx", "i_frame_int_gpu_mem_reserved",
	"i_frame_pk_job", "i_frame_pkjoblayer", "i_frame_state_job", "c_frame_pk", "c_frame_str_name_unq"}

// planNode is what the test reads of a node of EXPLAIN's JSON plan.
type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Plans    []planNode `json:"Plans"`
}
