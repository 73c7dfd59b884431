package main

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// Rows Cuebot's schema allows but no sane farm has (issue 12), written with
// SQL into a seeded farm before one instance of `cuesched run --dry-run`
// starts on it: odd rows Cuebot would book are booked where Cuebot would
// book them (tags in odd case and spacing, zero and negative cores, an OS
// string only one host reports), the others keep waiting (an OS no host
// reports, the same OS in another case, a show whose burst is 0), layers
// that cannot be booked at all are skipped with one log line each (no tags,
// a negative memory minimum), and hosts whose capacity no proc can hold or
// that have none are left alone. The instance never stops and the audit is
// clean.
func TestRunBooksOddRowsWhereCuebotWould(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	f := &seed.Farm{Allocations: []seed.Allocation{{Name: "local.gen", Tag: "gen"}, {Name: "local.other", Tag: "other"}}}
	for _, n := range []string{"127.12.0.1", "127.12.0.2", "127.12.0.3", "127.12.0.4", "127.12.0.5", "127.12.0.6"} {
		f.Hosts = append(f.Hosts, seed.Host{Name: n, Alloc: "local.gen", Cores: 800, Mem: 64 * seed.GB})
	}
	f.Hosts = append(f.Hosts, seed.Host{Name: "127.12.0.9", Alloc: "local.other", Cores: 800, Mem: 64 * seed.GB,
		OS: "Plan9", ManualTags: []string{"p9"}})
	f.Shows = []seed.Show{
		{Name: "film", Managed: true, Subscriptions: []seed.Subscription{
			{Alloc: "local.gen", Size: 100_000, Burst: 100_000}, {Alloc: "local.other", Size: 100_000, Burst: 100_000}}},
		{Name: "noburst", Managed: true, Subscriptions: []seed.Subscription{{Alloc: "local.gen", Size: 100, Burst: 0}}},
	}
	one := func(name, tags string) seed.Layer {
		return seed.Layer{Name: name, Frames: 1, Cores: 100, Mem: seed.GB, Threadable: true, Tags: tags}
	}
	f.Jobs = []seed.Job{
		{Name: "good", Show: "film", Layers: []seed.Layer{{Name: "render", Frames: 2, Cores: 100, Mem: seed.GB,
			Threadable: true, Tags: "gen"}}},
		{Name: "odd", Show: "film", Layers: []seed.Layer{one("oddcase", "gen"), one("zerocores", "gen"),
			one("negcores", "gen"), one("notags", "gen"), one("negmem", "gen")}},
		{Name: "plan9", Show: "film", OS: "Plan9", Layers: []seed.Layer{one("render", "p9")}},
		{Name: "suse", Show: "film", OS: "SuSE-13", Layers: []seed.Layer{one("render", "gen|p9")}},
		{Name: "lowercase-os", Show: "film", OS: "plan9", Layers: []seed.Layer{one("render", "p9")}},
		{Name: "burst0", Show: "noburst", Layers: []seed.Layer{one("render", "gen")}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := seed.Load(ctx, db.Pool, f, 12)
	if err != nil {
		t.Fatal(err)
	}
	odd := s.Jobs["odd"].Layers
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE layer SET str_tags = '  GEN | g e n|' WHERE pk_layer = $1`, odd["oddcase"])
	exec(`UPDATE layer SET int_cores_min = 0 WHERE pk_layer = $1`, odd["zerocores"])
	exec(`UPDATE layer SET int_cores_min = -100 WHERE pk_layer = $1`, odd["negcores"])
	exec(`UPDATE layer SET str_tags = '' WHERE pk_layer = $1`, odd["notags"])
	exec(`UPDATE layer SET int_mem_min = -1048576 WHERE pk_layer = $1`, odd["negmem"])
	// A host reporting more cores than a proc or counter can hold, taking
	// whole hosts (ALL mode), and a host of no capacity at all.
	exec(`UPDATE host SET int_cores = 1099511627776, int_cores_idle = 1099511627776, int_thread_mode = 1
	       WHERE str_name = '127.12.0.5'`)
	exec(`UPDATE host SET int_cores = 0, int_cores_idle = 0, int_mem = 0, int_mem_idle = 0 WHERE str_name = '127.12.0.6'`)

	run := startRun(t, db)
	// The bookable: good's 2 frames, oddcase, zerocores, negcores and plan9.
	running := func() int {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, time.Minute, "the odd rows Cuebot would book booked", func() bool {
		run.alive(t)
		return running() >= 6
	})
	skipLine := regexp.MustCompile(`level=WARN msg="pending layer skipped[^\n]* name=(\w+)`)
	waitFor(t, time.Minute, "both unbookable layers logged", func() bool {
		return len(skipLine.FindAllString(run.out.String(), -1)) >= 2
	})
	run.stop(t)

	procs := map[string]struct {
		host  string
		cores int64
	}{}
	rows, err := db.Pool.Query(ctx, `SELECT j.str_name || '/' || l.str_name, h.str_name, p.int_cores_reserved
		FROM proc p JOIN layer l USING (pk_layer) JOIN job j ON j.pk_job = p.pk_job JOIN host h USING (pk_host)`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name, host string
		var cores int64
		if err := rows.Scan(&name, &host, &cores); err != nil {
			t.Fatal(err)
		}
		if _, dup := procs[name]; dup && name != "good/render" {
			t.Errorf("layer %s holds two procs", name)
		}
		procs[name] = struct {
			host  string
			cores int64
		}{host, cores}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"good/render": 100, "odd/oddcase": 100, "odd/zerocores": 800,
		"odd/negcores": 700, "plan9/render": 100} {
		p, ok := procs[name]
		switch {
		case !ok:
			t.Errorf("%s was not booked; Cuebot would book it", name)
		case p.cores != want:
			t.Errorf("%s booked with %d cores, want %d", name, p.cores, want)
		case p.host == "127.12.0.5" || p.host == "127.12.0.6":
			t.Errorf("%s booked on %s, whose capacity no proc can use", name, p.host)
		case name == "plan9/render" && p.host != "127.12.0.9":
			t.Errorf("%s booked on %s, not on the one host reporting its OS", name, p.host)
		}
	}
	for _, name := range []string{"odd/notags", "odd/negmem", "suse/render", "lowercase-os/render", "burst0/render"} {
		if p, ok := procs[name]; ok {
			t.Errorf("%s booked on %s; Cuebot would not book it", name, p.host)
		}
	}
	if len(procs) != 5 || running() != 6 {
		t.Errorf("procs of %d layers and %d frames running, want 5 and 6: %v", len(procs), running(), procs)
	}
	logged := map[string]int{}
	for _, m := range skipLine.FindAllStringSubmatch(run.out.String(), -1) {
		logged[m[1]]++
	}
	if logged["notags"] != 1 || logged["negmem"] != 1 || len(logged) != 2 {
		t.Errorf("skip lines by layer %v, want one for notags and one for negmem", logged)
	}
	audittest.Clean(t, db.Pool)
}
