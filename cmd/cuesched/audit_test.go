package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/grants"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// auditCLI runs `cuesched audit --json` and decodes its report; stderr apart.
func auditCLI(t *testing.T, args ...string) (int, auditReport, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := realMain(t.Context(), append([]string{"audit", "--json"}, args...),
		&environment{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	var r auditReport
	if code != 2 {
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("audit --json exited %d with no report: %v\n%s%s", code, err, out.String(), errOut.String())
		}
	}
	return code, r, errOut.String()
}

// `cuesched audit` as the role `cuesched grants` makes, which may neither
// write (its sessions are read-only) nor make temporary tables: a clean farm
// exits 0, a cap lowered under running frames is reported left legal and
// still exits 0, a counter drift and a stale outbox row are illegal and exit 1.
func TestAuditCommandAsGrantsRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := pgtest.NewDB(t)
	s, err := seed.Load(ctx, db.Pool, &seed.Farm{
		Hosts: []seed.Host{{Name: "h1", Alloc: "local.general", Cores: 800, Mem: 16 * seed.GB}},
		Shows: []seed.Show{{Name: "aud", Managed: true,
			Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 1000, Burst: 1000}}}},
		Limits: []seed.Limit{{Name: "lic", Max: 5}},
		Jobs: []seed.Job{{Name: "aud-job", Show: "aud", Layers: []seed.Layer{
			{Name: "l", Frames: 3, Cores: 100, Mem: seed.GB, Limits: []string{"lic"}}}}},
	}, 5)
	if err != nil {
		t.Fatal(err)
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	for _, f := range []string{"0001-l", "0002-l"} {
		if _, err := sim.Book(ctx, s.Jobs["aud-job"].Frames[f], s.Hosts["h1"], 100, seed.GB, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Both booked by cuesched, launched.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO cuesched.launch_outbox (proc_id, frame_id, frame_version, host_id,
		host_name, cluster_id, state) SELECT pk_proc, pk_frame, 1, pk_host, 'h1', 1, 'launched' FROM proc`); err != nil {
		t.Fatal(err)
	}
	role := db.NewRole(t, "auditor", "CREATE ROLE %[1]s LOGIN")
	sql, err := grants.SQL(role, db.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, sql+"; REVOKE TEMPORARY ON DATABASE "+db.Name+" FROM PUBLIC; ALTER ROLE "+role+
		" SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	dsn := db.DSN + " user=" + role

	code, r, stderr := auditCLI(t, "--db", dsn)
	if code != 0 || r.Illegal != 0 || r.LeftLegal != 0 || len(r.Findings) != 0 || r.OutboxAge != "5m0s" {
		t.Fatalf("clean farm: exit %d, report %+v, stderr %s; want exit 0 and no findings", code, r, stderr)
	}

	lim := s.Limits["lic"]
	if _, err := db.Pool.Exec(ctx, `UPDATE limit_record SET int_max_value = 1 WHERE pk_limit_record = $1`, lim); err != nil {
		t.Fatal(err)
	}
	code, r, stderr = auditCLI(t, "--db", dsn)
	if code != 0 || r.Illegal != 0 || r.LeftLegal != 1 || r.Findings[0].Check != "cap-limit" || r.Findings[0].Key != lim {
		t.Fatalf("limit lowered: exit %d, report %+v, stderr %s; want exit 0 and cap-limit %s left legal", code, r, stderr, lim)
	}

	job := s.Jobs["aud-job"].ID
	if _, err := db.Pool.Exec(ctx, `UPDATE job_resource SET int_cores = int_cores + 100 WHERE pk_job = $1`, job); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE cuesched.launch_outbox SET state = 'pending',
		created_at = now() - interval '10 minutes' WHERE proc_id = (SELECT min(proc_id) FROM cuesched.launch_outbox)`); err != nil {
		t.Fatal(err)
	}
	code, r, stderr = auditCLI(t, "--db", dsn)
	if code != 1 || r.Illegal != 2 || r.LeftLegal != 1 || !strings.Contains(stderr, "cuesched audit: 2 illegal findings") {
		t.Fatalf("drift and a stale row: exit %d, report %+v, stderr %s; want exit 1 and 2 illegal", code, r, stderr)
	}
	var checks []string
	for _, v := range audit.Illegals(r.Findings) {
		checks = append(checks, v.Check)
	}
	if strings.Join(checks, ",") != "counter-job,outbox-stale" {
		t.Errorf("illegal checks %v, want counter-job and outbox-stale", checks)
	}
	// Younger than a longer --outbox-age: only the drift.
	if code, r, _ = auditCLI(t, "--db", dsn, "--outbox-age", "1h"); code != 1 || r.Illegal != 1 {
		t.Errorf("--outbox-age 1h: exit %d, report %+v; want the drift alone", code, r)
	}

	var out bytes.Buffer
	code = realMain(ctx, []string{"audit", "--db", dsn}, &environment{stdout: &out, stderr: &out,
		getenv: func(string) string { return "" }})
	if code != 1 || !strings.Contains(out.String(), "2 illegal, 1 left legal") ||
		!strings.Contains(out.String(), "outbox-stale") {
		t.Errorf("text report: exit %d\n%s", code, out.String())
	}
	if code, out := cli(t, nil, "audit", "--outbox-age", "soon"); code != 2 || !strings.Contains(out, "--outbox-age") {
		t.Errorf("bad --outbox-age: exit %d, output %s; want 2 naming it", code, out)
	}
	if code, out := cli(t, nil, "audit", "--help"); code != 0 || !strings.Contains(out, "illegal") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}
