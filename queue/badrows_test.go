package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/queue"
)

// lockedBuffer is a log destination the queue's goroutine and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// skipLines are the "pending layer skipped" records logged, by layer name.
func (l *lockedBuffer) skipLines(t *testing.T) map[string][]map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]map[string]any{}
	for _, line := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if msg, _ := rec["msg"].(string); len(msg) >= 21 && msg[:21] == "pending layer skipped" {
			name, _ := rec["name"].(string)
			out[name] = append(out[name], rec)
		}
	}
	return out
}

// Layers whose rows Cuebot's schema allows but that cannot be booked (issue
// 12: no tags, negative memory, GPU or GPU memory minimums) are left out of
// the queue with one log line and one count each, however often reads find
// them again; odd but bookable rows (tags in odd case and spacing, zero,
// negative and huge cores, an unknown OS) are queued for matching to place or
// keep waiting. A layer fixed in Cuebot is queued; broken again, it is
// reported again.
func TestOddLayerRowsAreSkippedOnceOrQueued(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	layer := func(name string) seed.Layer {
		return seed.Layer{Name: name, Frames: 1, Cores: 100, Mem: seed.GB, Tags: "general"}
	}
	names := []string{"no-tags", "bars-only", "neg-mem", "neg-gpus", "neg-gpu-mem", "odd-case", "zero-cores",
		"neg-cores", "huge"}
	var ls []seed.Layer
	for _, n := range names {
		ls = append(ls, layer(n))
	}
	k := launch(t, s, job("odd", ls...))
	osJob := launch(t, s, job("unknown-os"))
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"UPDATE layer SET str_tags = '' WHERE pk_layer = $1", []any{k.Layers["no-tags"]}},
		{"UPDATE layer SET str_tags = ' | |' WHERE pk_layer = $1", []any{k.Layers["bars-only"]}},
		{"UPDATE layer SET int_mem_min = -1 WHERE pk_layer = $1", []any{k.Layers["neg-mem"]}},
		{"UPDATE layer SET int_gpus_min = -1 WHERE pk_layer = $1", []any{k.Layers["neg-gpus"]}},
		{"UPDATE layer SET int_gpu_mem_min = -1 WHERE pk_layer = $1", []any{k.Layers["neg-gpu-mem"]}},
		{"UPDATE layer SET str_tags = '  GENERAL | gen eral|' WHERE pk_layer = $1", []any{k.Layers["odd-case"]}},
		{"UPDATE layer SET int_cores_min = 0 WHERE pk_layer = $1", []any{k.Layers["zero-cores"]}},
		{"UPDATE layer SET int_cores_min = -100 WHERE pk_layer = $1", []any{k.Layers["neg-cores"]}},
		{"UPDATE layer SET int_cores_min = 9223372036854775807, int_mem_min = 9223372036854775807 WHERE pk_layer = $1",
			[]any{k.Layers["huge"]}},
		{"UPDATE job SET str_os = 'SuSE-13' WHERE pk_job = $1", []any{osJob.ID}},
	} {
		if _, err := db.Pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}

	var logs lockedBuffer
	q := queue.New(db.Pool, slog.New(slog.NewJSONHandler(&logs, nil)))
	reg := prometheus.NewRegistry()
	q.Metrics = queue.NewMetrics(reg)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	// refreshed has the queue's goroutine re-read the job and waits for it.
	refreshed := func() {
		t.Helper()
		applied := q.Applied()
		q.Notify("job:" + k.ID)
		select {
		case <-applied:
		case <-time.After(deadline):
			t.Fatal("the job was not read again")
		}
	}

	skipped := map[string]string{"no-tags": queue.SkipNoTags, "bars-only": queue.SkipNoTags,
		"neg-mem": queue.SkipNegativeMinimum, "neg-gpus": queue.SkipNegativeMinimum,
		"neg-gpu-mem": queue.SkipNegativeMinimum}
	general := generalKey(t, db)
	check := func(when string) {
		t.Helper()
		for _, n := range names {
			l, ok := q.Layer(k.Layers[n])
			if _, skip := skipped[n]; skip {
				if ok {
					t.Errorf("%s: layer %s queued, want it skipped", when, n)
				}
				continue
			}
			if !ok {
				t.Errorf("%s: layer %s not queued", when, n)
			} else if !slices.Equal(l.Tags, []string{"general"}) {
				t.Errorf("%s: layer %s has tags %q, want [general]", when, n, l.Tags)
			}
		}
		if _, ok := q.Layer(osJob.Layers["render"]); !ok {
			t.Errorf("%s: the layer of a job with an unknown OS is not queued (matching keeps it waiting)", when)
		}
		if got := len(q.Layers(general)); got != len(names)-len(skipped)+1 {
			t.Errorf("%s: %d layers queued in local.general, want %d", when, got, len(names)-len(skipped)+1)
		}
		lines := logs.skipLines(t)
		for n, reason := range skipped {
			if len(lines[n]) != 1 {
				t.Errorf("%s: layer %s skipped with %d log lines, want 1", when, n, len(lines[n]))
				continue
			}
			rec := lines[n][0]
			if rec["level"] != "WARN" || rec["reason"] != reason || rec["table"] != "layer" ||
				rec["layer"] != k.Layers[n] || rec["detail"] == "" {
				t.Errorf("%s: layer %s skipped with %v, want a warning naming the layer, reason %s and detail", when, n,
					rec, reason)
			}
		}
		if len(lines) != len(skipped) {
			t.Errorf("%s: skip lines for %d layers, want %d", when, len(lines), len(skipped))
		}
		if got := metricValue(q.Metrics.RowsSkipped.WithLabelValues("layer", queue.SkipNoTags)); got != 2 {
			t.Errorf("%s: %v layers counted skipped for %s, want 2", when, got, queue.SkipNoTags)
		}
		if got := metricValue(q.Metrics.RowsSkipped.WithLabelValues("layer", queue.SkipNegativeMinimum)); got != 3 {
			t.Errorf("%s: %v layers counted skipped for %s, want 3", when, got, queue.SkipNegativeMinimum)
		}
	}
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a resync")
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a second resync")
	refreshed()
	check("after the job's hint")

	// Fixed, the layer is queued; broken again, it is reported again.
	if _, err := db.Pool.Exec(ctx, "UPDATE layer SET str_tags = 'general' WHERE pk_layer = $1", k.Layers["no-tags"]); err != nil {
		t.Fatal(err)
	}
	refreshed()
	if _, ok := q.Layer(k.Layers["no-tags"]); !ok {
		t.Fatal("the layer given a tag is not queued")
	}
	if _, err := db.Pool.Exec(ctx, "UPDATE layer SET str_tags = '|' WHERE pk_layer = $1", k.Layers["no-tags"]); err != nil {
		t.Fatal(err)
	}
	refreshed()
	if _, ok := q.Layer(k.Layers["no-tags"]); ok {
		t.Fatal("the layer whose tags were emptied again is still queued")
	}
	if n := len(logs.skipLines(t)["no-tags"]); n != 2 {
		t.Errorf("the layer broken twice was reported %d times, want 2", n)
	}
}

// The skip counter is exported at 0 for every reason before anything is
// skipped, so dashboards and alerts see it.
func TestRowsSkippedExportedAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	queue.NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "cuesched_rows_skipped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			got = append(got, labels["table"]+"/"+labels["reason"])
		}
	}
	want := []string{"frame/" + queue.SkipNullVersion}
	for _, r := range queue.SkipReasons {
		want = append(want, "layer/"+r)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("cuesched_rows_skipped_total exported for %q, want %q", got, want)
	}
}

// A WAITING frame whose int_version is NULL can never be booked (every
// booking, Cuebot's too, is guarded by int_version = the version read): the
// frames read for a layer leave it out, after the bookable frames behind it
// in dispatch order, with one log line and one count however often it is
// read; a layer left with only such frames gets none.
func TestNullVersionFramesAreSkippedOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	s := testFarm(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	k := launch(t, s, job("nullver",
		seed.Layer{Name: "mixed", Frames: 3, Cores: 100, Mem: seed.GB, Tags: "general"},
		seed.Layer{Name: "only", Frames: 1, Cores: 100, Mem: seed.GB, Tags: "general"}))
	// The first frame of "mixed" in dispatch order, and the only one of "only".
	if _, err := db.Pool.Exec(ctx, `UPDATE frame SET int_version = NULL WHERE pk_frame IN (
		(SELECT pk_frame FROM frame WHERE pk_layer = $1 ORDER BY int_dispatch_order, int_layer_order LIMIT 1),
		(SELECT pk_frame FROM frame WHERE pk_layer = $2))`, k.Layers["mixed"], k.Layers["only"]); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	q := queue.New(db.Pool, slog.New(slog.NewJSONHandler(&logs, nil)))
	q.Metrics = queue.NewMetrics(prometheus.NewRegistry())
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	mixed, ok1 := q.Layer(k.Layers["mixed"])
	only, ok2 := q.Layer(k.Layers["only"])
	if !ok1 || !ok2 {
		t.Fatal("the layers were not queued")
	}
	for _, limit := range []int{1, 0, 0} {
		if err := q.Frames(ctx, []*match.Layer{mixed, only}, limit); err != nil {
			t.Fatal(err)
		}
		want := 2
		if limit == 1 {
			want = 1
		}
		if len(mixed.Frames) != want || len(only.Frames) != 0 {
			t.Fatalf("limit %d: %d frames of the mixed layer and %d of the NULL-only one, want %d and 0", limit,
				len(mixed.Frames), len(only.Frames), want)
		}
	}
	// A resync (every interval in poll mode) reports nothing again.
	if err := q.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Frames(ctx, []*match.Layer{mixed, only}, 0); err != nil {
		t.Fatal(err)
	}
	lines := func() int {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		return strings.Count(logs.b.String(), `"reason":"null-version"`)
	}
	if n := lines(); n != 2 {
		t.Errorf("%d null-version log lines, want one for each of the 2 frames", n)
	}
	if got := metricValue(q.Metrics.RowsSkipped.WithLabelValues("frame", queue.SkipNullVersion)); got != 2 {
		t.Errorf("%v frames counted skipped, want 2", got)
	}
	// Fixed, the frame is read again; broken again, it is reported again.
	setOnly := func(v any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, `UPDATE frame SET int_version = $2 WHERE pk_layer = $1`, k.Layers["only"], v); err != nil {
			t.Fatal(err)
		}
		if err := q.Frames(ctx, []*match.Layer{mixed, only}, 0); err != nil {
			t.Fatal(err)
		}
	}
	setOnly(0)
	if len(only.Frames) != 1 {
		t.Fatalf("the fixed frame was not read: %d frames", len(only.Frames))
	}
	setOnly(nil)
	if n := lines(); n != 3 {
		t.Errorf("%d null-version log lines after the frame was broken again, want 3", n)
	}
}
