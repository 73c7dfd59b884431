package migrations_test

import (
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/migrations"
)

// What the migrations record in the database is what the binary reads from
// its files: an older binary, which has only the database's, sees the same.
func TestRecordedMarksMatchFiles(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	st, err := migrations.Read(t.Context(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Recorded) != len(ms) {
		t.Errorf("%d marks recorded, %d migrations: %v", len(st.Recorded), len(ms), st.Recorded)
	}
	for _, m := range ms {
		if got, ok := st.Recorded[m.Version]; !ok || got != m.Mark {
			t.Errorf("migration %d recorded %+v (%v), its file says %+v", m.Version, got, ok, m.Mark)
		}
	}
}
