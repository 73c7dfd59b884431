package pgcluster_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestFailoverTwice: a synchronous standby promoted after its primary
// stopped holds every commit acknowledged before, a client of the
// two-host DSN finds whichever server accepts writes, and the promoted
// primary gets a standby of its own on the old primary's port, which takes
// over in turn.
func TestFailoverTwice(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	p := pgtest.NewCluster(t, pgcluster.Options{})
	// The templates are most of what a base backup would copy, twice.
	for _, tpl := range []pgtest.Template{pgtest.Full, pgtest.Cuebot, pgtest.Empty} {
		exec(t, p.DSN("postgres"), fmt.Sprintf("ALTER DATABASE %s IS_TEMPLATE false", tpl))
		exec(t, p.DSN("postgres"), fmt.Sprintf("DROP DATABASE %s", tpl))
	}
	s, err := p.StartStandby(ctx, "first", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	dsn := pgcluster.MultiHostDSN("postgres", p.Port, s.Port)
	exec(t, dsn, "CREATE TABLE acked (n int)")
	exec(t, dsn, "INSERT INTO acked VALUES (1)")
	if got := one(t, p.DSN("postgres"), "SHOW synchronous_standby_names"); got != `"first"` {
		t.Errorf("the primary's synchronous_standby_names = %s, want \"first\"", got)
	}

	if err := p.Shutdown(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	// The standby is read-only until promoted: the DSN finds no server.
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	if conn, err := pgx.Connect(cctx, dsn); err == nil {
		conn.Close(ctx)
		t.Fatal("the two-host DSN connected with the primary down and the standby not promoted")
	}
	ccancel()
	if err := s.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, "INSERT INTO acked VALUES (2)")

	// The old primary's host becomes the new primary's standby.
	oldPort := p.Port
	if err := p.Stop(); err != nil {
		t.Fatalf("stop a primary already shut down: %v", err)
	}
	s2, err := s.StartStandby(ctx, "second", oldPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Stop() })
	if s2.Port != oldPort {
		t.Fatalf("second standby on port %d, want the old primary's %d", s2.Port, oldPort)
	}
	exec(t, dsn, "INSERT INTO acked VALUES (3)")
	if err := s.Shutdown(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if got := one(t, dsn, "SELECT string_agg(n::text, ',' ORDER BY n) FROM acked"); got != "1,2,3" {
		t.Errorf("after two failovers the acknowledged rows are %s, want 1,2,3", got)
	}
	if got := one(t, dsn, "SELECT inet_server_port()::text"); got != strconv.Itoa(s2.Port) {
		t.Errorf("the two-host DSN reached port %s, want the promoted %s", got, strconv.Itoa(s2.Port))
	}
}

func exec(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect for %s: %v", sql, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func one(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect for %s: %v", sql, err)
	}
	defer conn.Close(ctx)
	var out string
	if err := conn.QueryRow(ctx, sql).Scan(&out); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}
