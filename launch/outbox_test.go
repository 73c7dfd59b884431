package launch

import (
	"os"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// The outbox migration's down removes exactly what its up added, and its
// trigger forgets a booking when the proc goes.
func TestOutboxMigration(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	down, err := os.ReadFile("../migrations/0005_launch_outbox.down.sql")
	if err != nil {
		t.Fatal(err)
	}
	up, err := os.ReadFile("../migrations/0005_launch_outbox.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, string(down)); err != nil {
		t.Fatalf("down: %v", err)
	}
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'cuesched' AND c.relname LIKE 'launch_outbox%')
		+ (SELECT count(*) FROM pg_proc WHERE proname = 'forget_launch')
		+ (SELECT count(*) FROM pg_trigger WHERE tgname = 'cuesched_forget_launch')`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("down left %d objects", left)
	}
	if _, err := db.Pool.Exec(ctx, string(up)); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
