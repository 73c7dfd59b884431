package archtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSchedulerKnowsOnlyPorts: the loop reads and submits through the
// interfaces of scheduler/ports.go; its non-test files import no database
// driver and no feed (cdc) and hold no SQL.
func TestSchedulerKnowsOnlyPorts(t *testing.T) {
	lines := goList(t, "-f", "{{.Dir}} {{join .Imports \" \"}}", module+"/scheduler")
	if len(lines) != 1 {
		t.Fatalf("go list scheduler: %q", lines)
	}
	dir, imports, _ := strings.Cut(lines[0], " ")
	for _, imp := range strings.Fields(imports) {
		if strings.HasPrefix(imp, "github.com/jackc/") || imp == module+"/cdc" || imp == "database/sql" {
			t.Errorf("scheduler imports %s: the loop reaches the database only through its ports", imp)
		}
	}
	sql := regexp.MustCompile(`\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b[^\n]*\b(FROM|SET|VALUES|WHERE)\b`)
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := sql.Find(src); m != nil {
			t.Errorf("%s holds SQL (%q): the loop reads through its ports", filepath.Base(f), m)
		}
	}
}
