package cuebotdb_test

import (
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestCreate(t *testing.T) {
	db := pgtest.NewDB(t, pgtest.Cuebot)
	var n int
	if err := db.Pool.QueryRow(t.Context(), "SELECT count(*) FROM alloc").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("fresh Cuebot has %d allocations, want 5", n)
	}
}
