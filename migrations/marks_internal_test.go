package migrations

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every migration has a mark; from 0011 on each up file records its own
// version's alone (0011 also those before it) and its down deletes it, so
// that an older binary finds it in the database and down then up again
// works.
func TestEveryMigrationRecordsItsMark(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	latest, err := Latest()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[len(ms)-1].Version != latest {
		t.Fatalf("Migrations() ends at %v, Latest() is %d", ms, latest)
	}
	for _, m := range ms {
		if !m.Marked || m.Mark.Why == "" {
			t.Errorf("migration %d (%s) records no mark: end its up file with %q (%d, true|false, 'why')",
				m.Version, m.Name, markInsert, m.Version)
		}
		if m.Version <= 11 {
			continue
		}
		ups, _ := filepath.Glob(fmt.Sprintf("%04d_*.up.sql", m.Version))
		downs, _ := filepath.Glob(fmt.Sprintf("%04d_*.down.sql", m.Version))
		if len(ups) != 1 || len(downs) != 1 {
			t.Errorf("migration %d: up files %v, down files %v", m.Version, ups, downs)
			continue
		}
		up, err := os.ReadFile(ups[0])
		if err != nil {
			t.Fatal(err)
		}
		if marks, err := parseMarks(ups[0], string(up)); err != nil || len(marks) != 1 {
			t.Errorf("%s records %v (%v), want its own version's mark alone", ups[0], marks, err)
		}
		down, err := os.ReadFile(downs[0])
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("DELETE FROM cuesched.migration WHERE version = %d;", m.Version); !strings.Contains(string(down), want) {
			t.Errorf("%s lacks %q", downs[0], want)
		}
	}
}

func TestParseMarks(t *testing.T) {
	good := "CREATE TABLE x ();\n" + markInsert + "\n    (12, true, 'adds x; it''s new'),\n    (13,false,'b') ;\n"
	marks, err := parseMarks("good", good)
	if err != nil || len(marks) != 2 || marks[12] != (Mark{true, "adds x; it's new"}) || marks[13] != (Mark{false, "b"}) {
		t.Errorf("parseMarks(good) = %v, %v", marks, err)
	}
	if marks, err := parseMarks("none", "CREATE TABLE x ();"); err != nil || marks != nil {
		t.Errorf("parseMarks(none) = %v, %v", marks, err)
	}
	for _, bad := range []string{
		markInsert + " (12, yes, 'x');",
		markInsert + " (12, true, x);",
		markInsert + " (12, true, 'x')",
		markInsert + " (12, true, 'x');\n" + markInsert + " (13, true, 'y');",
	} {
		if marks, err := parseMarks("bad", bad); err == nil {
			t.Errorf("parseMarks(%q) = %v, want an error", bad, marks)
		}
	}
}
