package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// `cuesched run` as a role made only by the SQL `cuesched grants` prints
// (plus LOGIN) books the stress farm (seed.SuiteStress) with a clean audit; with one of
// those grants revoked it exits at start with one line naming it.
func TestRunAsARoleMadeByGrants(t *testing.T) {
	t.Parallel()
	db, farm, _ := peerStressDB(t)
	hostsReporting(t, db.Pool)
	total := int64(farm.FrameCount())
	// What PUBLIC holds by default must not stand in for a missing grant.
	exec1(t, db.Pool, fmt.Sprintf(`REVOKE CONNECT ON DATABASE %s FROM PUBLIC; REVOKE USAGE ON SCHEMA public FROM PUBLIC`,
		db.Name))
	role := db.NewRole(t, "sched", "CREATE ROLE %[1]s LOGIN")
	out, err := exec.Command(binary, "grants", "--role", role, "--database", db.Name).Output()
	if err != nil {
		t.Fatalf("cuesched grants: %v", err)
	}
	exec1(t, db.Pool, string(out))
	dsn := db.DSN + " user=" + role

	exec1(t, db.Pool, "REVOKE UPDATE ON limit_record FROM "+role)
	short := startInstanceOn(t, dsn, "short")
	select {
	case <-short.done:
	case <-time.After(time.Minute):
		t.Fatal("an instance lacking a grant did not exit within a minute")
	}
	want := fmt.Sprintf(`cuesched run: role %q lacks UPDATE on table limit_record: run `+"`cuesched grants --role %s`", role, role)
	var lines []string
	for _, l := range strings.Split(short.out.String(), "\n") {
		if strings.HasPrefix(l, "cuesched run: ") {
			lines = append(lines, l)
		}
	}
	if short.err == nil || len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Fatalf("exit %v, error lines %q; want a non-zero exit and one line %q...", short.err, lines, want)
	}
	exec1(t, db.Pool, "GRANT UPDATE ON limit_record TO "+role)

	inst := startInstanceOn(t, dsn, "granted")
	running := func() int64 { return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) }
	waitFor(t, 2*time.Minute, "every frame booked", func() bool { return running() == total }, inst)
	inst.stop(t)
	if n := count(t, db.Pool, `SELECT count(*) FROM proc`); n != total {
		t.Errorf("%d procs, want %d", n, total)
	}
	auditClean(t, db.Pool)
}
