package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/sim"
	"github.com/cuesched/cuesched/sim/replay"
)

// seedReplay seeds, in a database holding only Cuebot's schema, one host
// and a job of the last hour whose layer ran two frames (one of them twice,
// killed for its memory first), into the history tables alone.
func seedReplay(t *testing.T) *pgtest.DB {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	if _, err := seed.Load(ctx, db.Pool, &seed.Farm{
		Hosts: []seed.Host{{Name: "h1", Alloc: "local.general", Cores: 800, Mem: 32 * seed.GB}},
		Shows: []seed.Show{{Name: "alpha", Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 800, Burst: 800}}}},
	}, 1); err != nil {
		t.Fatal(err)
	}
	const now = `extract(epoch FROM now())::integer`
	for _, sql := range []string{
		`INSERT INTO job_history (pk_job, pk_show, str_name, str_shot, str_user, pk_facility, pk_dept, int_ts_started,
			dt_last_modified)
		 SELECT 'j1', pk_show, 'paint', 'shot', 'artist', 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1',
			'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA7', ` + now + ` - 3600, current_date FROM show WHERE str_name = 'alpha'`,
		`INSERT INTO layer_history (pk_layer, pk_job, str_name, str_type, int_cores_min, int_mem_min, dt_last_modified)
		 VALUES ('l1', 'j1', 'render', 'Render', 100, 1048576, current_date)`,
		`INSERT INTO frame_history (pk_frame, pk_layer, pk_job, str_name, str_state, int_mem_max_used, int_cores,
			int_exit_status, pk_alloc, int_ts_started, int_ts_stopped, dt_last_modified) VALUES
		 ('f1', 'l1', 'j1', '0001-render', 'SUCCEEDED', 524288, 100, 0, '00000000-0000-0000-0000-000000000000',
			` + now + ` - 3000, ` + now + ` - 2400, current_date),
		 ('f2', 'l1', 'j1', '0002-render', 'RUNNING', 4194304, 100, 33, '00000000-0000-0000-0000-000000000000',
			` + now + ` - 3000, ` + now + ` - 2900, current_date),
		 ('f2', 'l1', 'j1', '0002-render', 'SUCCEEDED', 524288, 100, 0, '00000000-0000-0000-0000-000000000000',
			` + now + ` - 2800, ` + now + ` - 1000, current_date)`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return db
}

// `sim --from-db` replays a database holding only Cuebot's schema and rows,
// as a role that may SELECT only the tables a replay reads: the report on
// standard output (JSON here), what was replayed on standard error.
func TestSimFromDB(t *testing.T) {
	t.Parallel()
	db := seedReplay(t)
	role := db.NewRole(t, "simreplay", `CREATE ROLE %[1]s LOGIN NOSUPERUSER; GRANT SELECT ON `+
		strings.Join(replay.Tables, ", ")+` TO %[1]s`)
	var stdout, stderr bytes.Buffer
	code := realMain(context.Background(), []string{"sim", "--from-db", db.DSN + " user=" + role, "--since", "2h", "--json"},
		&environment{stdout: &stdout, stderr: &stderr, getenv: os.Getenv})
	if code != 0 {
		t.Fatalf("sim --from-db exited %d:\n%s%s", code, stdout.String(), stderr.String())
	}
	var rep sim.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("not a JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Scenario != "replay --since 2h" || rep.Hosts != 1 || rep.Frames != 2 || len(rep.Variants) != 1 ||
		rep.Variants[0].FramesBooked != 2 || rep.Variants[0].DrainS == nil {
		t.Errorf("report %s: want 1 host, 2 frames booked once each, drained", stdout.String())
	}
	if want := "replaying 1 jobs (1 layers, 2 frames)"; !strings.Contains(stderr.String(), want) ||
		!strings.Contains(stderr.String(), "history: 3 runs, 1 killed for memory") {
		t.Errorf("standard error %q: want %q and the history's runs", stderr.String(), want)
	}
	if _, help := cli(t, nil, "sim", "--help"); !strings.Contains(help, "cuesched run's grants lack job_history, layer_history.") {
		t.Errorf("sim --help does not name the tables a replay reads beyond run's grants:\n%s", help)
	}
}

// Bad input to a replay exits 2 with one line naming what is wrong and
// what to do.
func TestSimFromDBBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	history := seedReplay(t)
	noHistory := pgtest.NewDB(t, pgtest.Cuebot)
	notCuebot := pgtest.NewDB(t, pgtest.Empty)
	// A role given run's grants only: it may not read layer_history.
	runRole := history.NewRole(t, "runonly", `CREATE ROLE %[1]s LOGIN NOSUPERUSER;
		GRANT SELECT ON alloc, facility, host, host_tag, show, subscription, layer, frame_history TO %[1]s`)
	if _, err := history.Pool.Exec(ctx, `GRANT SELECT ON job_history TO `+runRole); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from-db", history.DSN, "--since", "week"}, `--since "week": want days (7d) or a Go duration (36h, 90m), above zero`},
		{[]string{"--from-db", history.DSN, "--since", "0d"}, `--since "0d"`},
		{[]string{"--from-db", history.DSN, "--since", "-3h"}, `--since "-3h"`},
		{[]string{"--from-db", history.DSN, "--scenario", "strandgrow"}, "--scenario and --from-db are exclusive"},
		{[]string{"--scenario", "strandgrow", "--since", "7d"}, "--since is the window of history --from-db replays"},
		{[]string{"--from-db", noHistory.DSN}, "nothing to replay: table host holds no host"},
		{[]string{"--from-db", history.DSN, "--since", "10m"}, "nothing to replay: no job that arrived since"},
		{[]string{"--from-db", notCuebot.DSN}, "no Cuebot schema in database " + notCuebot.Name},
		{[]string{"--from-db", history.DSN + " user=" + runRole}, "may not read layer_history in database " + history.Name +
			" (permission denied): GRANT SELECT ON layer_history TO " + runRole},
		{[]string{"--from-db", "host=/nonexistent port=banana"}, "config: --from-db:"},
	} {
		code, out := cli(t, nil, append([]string{"sim"}, tc.args...)...)
		if code != 2 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("sim %q exited %d with:\n%s\nwant 2 and one line containing %q", tc.args, code, out, tc.want)
		}
	}
}
