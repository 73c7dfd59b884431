package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/grants"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/shows"
)

// Each show subcommand's --help names its own flags and no other command's;
// bad usage exits 2 with one line.
func TestShowUsage(t *testing.T) {
	t.Parallel()
	if code, out := cli(t, nil, "show", "--help"); code != 0 ||
		!strings.Contains(out, "  list ") || !strings.Contains(out, "  manage ") || !strings.Contains(out, "  release ") {
		t.Errorf("show --help exited %d:\n%s", code, out)
	}
	for _, tc := range []struct {
		sub       string
		want, not []string
	}{
		{"list", []string{"-json", "-db"}, []string{"-wait", "-policy", "-metrics-addr"}},
		{"manage", []string{"-db"}, []string{"-json", "-wait", "-policy"}},
		{"release", []string{"-wait", "-timeout", "-settle", "-db"}, []string{"-json", "-policy", "-rqd-port"}},
	} {
		code, out := cli(t, nil, "show", tc.sub, "--help")
		if code != 0 {
			t.Errorf("show %s --help exited %d:\n%s", tc.sub, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("show %s --help lacks %s:\n%s", tc.sub, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n+" ") || strings.Contains(out, n+"\n") {
				t.Errorf("show %s --help lists %s, not its flag:\n%s", tc.sub, n, out)
			}
		}
	}
	for _, args := range [][]string{
		{"show"}, {"show", "frobnicate"}, {"show", "manage", "--db", "postgres://x@nowhere/db"},
		{"show", "release", "a", "b", "--db", "postgres://x@nowhere/db"}, {"show", "list", "--policy", "epvm"},
		{"show", "release", "a", "--timeout", "0s", "--db", "postgres://x@nowhere/db"},
	} {
		if code, out := cli(t, nil, args...); code != 2 {
			t.Errorf("%q exited %d, want 2:\n%s", args, code, out)
		}
	}
}

// list, manage and release against the Cuebot-compatible schema: an
// unknown show is named with the nearest, manage is idempotent, release
// --wait with nothing running returns at once.
func TestShowCommands(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	f := &seed.Farm{
		Hosts: []seed.Host{{Name: "h1", Alloc: "local.general", Cores: 800, Mem: 16 * seed.GB}},
		Shows: []seed.Show{{Name: "film", Managed: true}, {Name: "legacy"}},
		Jobs:  []seed.Job{{Name: "j", Show: "film", Layers: []seed.Layer{{Name: "a", Frames: 3, Cores: 100, Mem: seed.GB}}}},
	}
	sd, err := seed.Load(t.Context(), db.Pool, f, 5)
	if err != nil {
		t.Fatal(err)
	}
	// One frame of film booked as cuesched books (its launch outbox row).
	sim := &cuebotsim.Sim{Pool: db.Pool}
	frame := sd.Jobs["j"].Frames["0001-a"]
	proc, err := sim.Book(t.Context(), frame, sd.Hosts["h1"], 100, seed.GB, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(t.Context(), `INSERT INTO cuesched.launch_outbox (proc_id, frame_id, frame_version, host_id, host_name, cluster_id, state)
		SELECT $1, $2::text, int_version, $3, 'h1', 1, 'dry' FROM frame WHERE pk_frame = $2::text`, proc, frame, sd.Hosts["h1"]); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CUESCHED_DB": db.URL}

	code, out := cli(t, nil, "show", "list", "--json", "--db", db.URL)
	if code != 0 {
		t.Fatalf("show list --json exited %d:\n%s", code, out)
	}
	var all []shows.Show
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("show list --json: %v\n%s", err, out)
	}
	if len(all) != 3 || all[0].Name != "film" || !all[0].Managed || all[0].Waiting != 2 || all[0].Cuesched != 1 || all[1].Managed {
		t.Errorf("show list --json: %+v", all)
	}

	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"manage", "legacy"}, 0, "show legacy is now managed by cuesched"},
		{[]string{"manage", "legacy"}, 0, "already managed"},
		{[]string{"manage", "flim"}, 1, `did you mean "film"`},
		{[]string{"release", "legasy"}, 1, `did you mean "legacy"`},
		{[]string{"release", "--wait", "legacy", "--timeout", "30s"}, 0, "none of its frames runs under cuesched"},
		{[]string{"release", "legacy"}, 0, "was not managed by cuesched"},
		{[]string{"list"}, 0, "UNDER CUESCHED"},
		{[]string{"release", "film", "--wait", "--timeout", "50ms"}, 1, "gave up after --timeout 50ms with 1 frame of show film still running under cuesched"},
		{[]string{"release", "film"}, 0, "frames still running under cuesched: 1"},
	}
	for _, st := range steps {
		code, out := cli(t, env, append([]string{"show"}, st.args...)...)
		if code != st.code || !strings.Contains(out, st.want) {
			t.Errorf("show %q exited %d (want %d), output lacks %q:\n%s", st.args, code, st.code, st.want, out)
		}
	}
	var managed bool
	if err := db.Pool.QueryRow(t.Context(), `SELECT b_scheduler_managed FROM show WHERE str_name = 'legacy'`).Scan(&managed); err != nil || managed {
		t.Errorf("legacy managed %v after its release (%v)", managed, err)
	}

	// cuesched's own role reads the list but may not hand shows over.
	role := db.NewRole(t, "sched", "CREATE ROLE %[1]s LOGIN")
	sql, err := grants.SQL(role, db.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
	if code, out := cli(t, nil, "show", "list", "--db", db.DSN+" user="+role); code != 0 || !strings.Contains(out, "legacy") {
		t.Errorf("show list as cuesched's role exited %d:\n%s", code, out)
	}
	for _, sub := range []string{"manage", "release"} {
		code, out := cli(t, nil, "show", sub, "legacy", "--db", db.DSN+" user="+role)
		if code != 1 || !strings.Contains(out, "run it as the owner of Cuebot's tables") || strings.Count(out, "\n") != 1 {
			t.Errorf("show %s as cuesched's role exited %d, want 1 and one line saying which role to use:\n%s", sub, code, out)
		}
	}
}
