package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/explain"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// explainFarm is a small farm with one job per reason explain gives.
func explainFarm() *seed.Farm {
	gen := func(name string, frames int, mutate func(*seed.Layer)) seed.Layer {
		l := seed.Layer{Name: name, Frames: frames, Cores: seed.Core, Mem: 2 * seed.GB, Threadable: true, Tags: "gen"}
		if mutate != nil {
			mutate(&l)
		}
		return l
	}
	return &seed.Farm{
		Allocations: []seed.Allocation{{Name: "local.gen", Tag: "gen"}, {Name: "local.old", Tag: "old"}},
		Hosts: []seed.Host{
			{Name: "render01", Alloc: "local.gen", Cores: 8 * seed.Core, Mem: 32 * seed.GB},
			{Name: "render02", Alloc: "local.gen", Cores: 8 * seed.Core, Mem: 32 * seed.GB},
			{Name: "old01", Alloc: "local.old", Cores: 8 * seed.Core, Mem: 32 * seed.GB, State: "DOWN"},
		},
		Shows: []seed.Show{
			{Name: "film", Managed: true, Subscriptions: []seed.Subscription{{Alloc: "local.gen", Size: 1600, Burst: 100000},
				{Alloc: "local.old", Size: 1600, Burst: 100000}}},
			{Name: "promo", Managed: true, Subscriptions: []seed.Subscription{{Alloc: "local.gen", Size: 100, Burst: 100}}},
			{Name: "legacy", Subscriptions: []seed.Subscription{{Alloc: "local.gen", Size: 1600, Burst: 1600}}},
		},
		Limits: []seed.Limit{{Name: "nuke_lic", Max: 0}},
		Jobs: []seed.Job{
			{Name: "film-fits", Show: "film", Priority: 50, Layers: []seed.Layer{gen("render", 3, nil)}},
			{Name: "film-capped", Show: "film", Layers: []seed.Layer{gen("comp", 2, func(l *seed.Layer) {
				l.Limits = []string{"nuke_lic"}
			})}},
			{Name: "film-nohost", Show: "film", Layers: []seed.Layer{gen("sim", 2, func(l *seed.Layer) { l.Tags = "nosuchtag" })}},
			{Name: "film-paused", Show: "film", Paused: true, Layers: []seed.Layer{gen("render", 2, nil)}},
			{Name: "film-later", Show: "film", Layers: []seed.Layer{gen("render", 2, func(l *seed.Layer) {
				l.StartAfter = time.Now().Add(24 * time.Hour)
			})}},
			{Name: "film-wide", Show: "film", Layers: []seed.Layer{gen("fluid", 1, func(l *seed.Layer) { l.Cores = 64 * seed.Core })}},
			{Name: "film-old", Show: "film", Layers: []seed.Layer{gen("render", 1, func(l *seed.Layer) { l.Tags = "old" })}},
			{Name: "film-depend", Show: "film", Layers: []seed.Layer{gen("render", 2, func(l *seed.Layer) { l.Depend = true })}},
			{Name: "promo-burst", Show: "promo", Layers: []seed.Layer{gen("render", 2, func(l *seed.Layer) { l.Cores = 2 * seed.Core })}},
			{Name: "legacy-job", Show: "legacy", Layers: []seed.Layer{gen("render", 2, nil)}},
		},
	}
}

// farmChecksum digests every row of the tables a booking would touch.
func farmChecksum(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var sums []string
	for _, table := range []string{"frame", "proc", "host", "host_stat", "subscription", "layer_stat", "job_stat",
		"layer_resource", "job_resource", "folder_resource", "point", "job"} {
		var sum string
		if err := pool.QueryRow(t.Context(), `SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
			FROM `+table+` t`).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, table+"="+sum)
	}
	return strings.Join(sums, " ")
}

func explainCLI(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := runExplain(context.Background(), &environment{stdout: &out, stderr: &errOut,
		getenv: func(k string) string { return env[k] }}, args)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

func TestExplain(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	if _, err := seed.Load(t.Context(), db.Pool, explainFarm(), 7); err != nil {
		t.Fatal(err)
	}
	before := farmChecksum(t, db.Pool)

	for _, tc := range []struct {
		job  string
		want []string
	}{
		{"film-fits", []string{"=> would book 3 frame(s) on hosts render0", "scheduler-managed yes", "clusters: alloc/local.gen"}},
		{"film-capped", []string{"frame(s) wait: cap: limit nuke_lic at its max 0", "limit nuke_lic: 0 running, max 0"}},
		{"film-nohost", []string{"frame(s) wait: no-host: tags \"nosuchtag\" name no host", "hosts tagged nosuchtag: 0"}},
		{"film-paused", []string{"not booked, before any matching:", "- job is paused", "=> were the job bookable: would book 2"}},
		{"film-later", []string{"wait: start-after: starts after"}},
		{"film-wide", []string{"frame(s) wait: no-fit: nearest host render0", "needs: 64 cores"}},
		{"film-old", []string{"frame(s) wait: capacity: no host tagged old has idle capacity",
			"hosts tagged old: 1, 0 UP and OPEN, 0 offered"}},
		{"film-depend", []string{"no waiting frames: 2 depend", "=> nothing to book"}},
		{"promo-burst", []string{"frame(s) wait: cap: subscription burst of show promo on allocations local.gen"}},
		{"legacy-job", []string{"show legacy is not scheduler-managed", "Cuebot books it"}},
	} {
		t.Run(tc.job, func(t *testing.T) {
			out, err := explainCLI(t, nil, "--db", db.DSN, "--job", tc.job)
			if err != nil {
				t.Fatalf("explain: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		out, err := explainCLI(t, map[string]string{"CUESCHED_DB": db.DSN}, "--job=film-capped", "--json")
		if err != nil {
			t.Fatalf("explain: %v\n%s", err, out)
		}
		var rep explain.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json does not parse: %v\n%s", err, out)
		}
		if rep.Job.Name != "film-capped" || !rep.Show.Managed || len(rep.Layers) != 1 {
			t.Fatalf("unexpected report: %+v", rep)
		}
		l := rep.Layers[0]
		if l.Outcome != "wait" || l.Reason != "cap" || !strings.Contains(l.Detail, "nuke_lic") || l.Unplaced != 2 {
			t.Errorf("layer %+v, want a wait for cap nuke_lic with 2 frames unplaced", l)
		}
		if len(l.Limits) != 1 || l.Limits[0].Name != "nuke_lic" || l.Limits[0].Max != 0 {
			t.Errorf("limits %+v", l.Limits)
		}
	})

	t.Run("layer filter and json placements", func(t *testing.T) {
		out, err := explainCLI(t, nil, "--db", db.DSN, "--job", "film-fits", "--layer", "render", "--json")
		if err != nil {
			t.Fatalf("explain: %v\n%s", err, out)
		}
		var rep explain.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		l := rep.Layers[0]
		if l.Outcome != "book" || len(l.Placements) != 3 || l.Placements[0].Size.Cores < seed.Core {
			t.Errorf("layer %+v, want 3 placements", l)
		}
		if _, err := explainCLI(t, nil, "--db", db.DSN, "--job", "film-fits", "--layer", "nope"); err == nil ||
			!strings.Contains(err.Error(), `no layer named "nope"`) {
			t.Errorf("unknown layer: %v", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		if _, err := explainCLI(t, nil, "--db", db.DSN); exitCode(err) != 2 {
			t.Errorf("no --job: %v (exit %d), want a usage error", err, exitCode(err))
		}
		if _, err := explainCLI(t, nil, "--db", db.DSN, "--job", "x", "--policy", "worst"); exitCode(err) != 2 {
			t.Errorf("bad --policy: %v (exit %d), want 2", err, exitCode(err))
		}
		if out, err := explainCLI(t, nil, "--help"); exitCode(err) != 0 || !strings.Contains(out, "usage: cuesched explain") {
			t.Errorf("--help: %v (exit %d), output %q", err, exitCode(err), out)
		}
		if _, err := explainCLI(t, nil, "--db", db.DSN, "--job", "no-such-job"); err == nil ||
			!strings.Contains(err.Error(), `no job named "no-such-job"`) {
			t.Errorf("unknown job: %v", err)
		}
	})

	if after := farmChecksum(t, db.Pool); after != before {
		t.Errorf("explain changed the database:\nbefore %s\nafter  %s", before, after)
	}
}
