package archtest

import (
	"strings"
	"testing"
)

// The rules fire on the breaches the issue names; TestLayers runs them over
// the module as it is, these show they can fail.
func TestRulesCatchBreaches(t *testing.T) {
	t.Parallel()
	allow := map[string][]string{
		"scheduler": {"cluster", "match"},
		"cache":     {"cdc", "match"},
		"match":     {},
	}
	m := func(p string) string { return module + "/" + p }
	cases := []struct {
		name    string
		check   func() []string
		mention string
	}{
		{"scheduler imports cdc", func() []string {
			return feedOrSQLViolations(pkgInfo{path: "scheduler", imports: []string{m("cdc")}}, nil)
		}, "imports " + m("cdc")},
		{"scheduler imports pgx", func() []string {
			return feedOrSQLViolations(pkgInfo{path: "scheduler", imports: []string{"github.com/jackc/pgx/v5"}}, nil)
		}, "github.com/jackc/pgx/v5"},
		{"scheduler holds SQL", func() []string {
			return feedOrSQLViolations(pkgInfo{path: "scheduler"},
				map[string]string{"shows.go": "q := `SELECT pk_show, str_name FROM show`"})
		}, "holds SQL"},
		{"the replica imports counters", func() []string {
			return importViolations(pkgInfo{path: "cache", imports: []string{m("counters")}}, allow)
		}, "cache imports counters"},
		{"match does I/O", func() []string {
			return ioViolations(pkgInfo{path: "match", deps: []string{"net", "github.com/jackc/pgx/v5"}})
		}, "depends on net"},
		{"match opens files", func() []string {
			return ioViolations(pkgInfo{path: "match", imports: []string{"os"}})
		}, "imports os"},
		{"a package nobody placed", func() []string {
			return importViolations(pkgInfo{path: "newthing"}, allow)
		}, "not in archtest's mayImport"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := c.check()
			if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), c.mention) {
				t.Fatalf("violations %q, want one mentioning %q", got, c.mention)
			}
		})
	}
	// And stay quiet on what is allowed.
	if v := importViolations(pkgInfo{path: "scheduler", imports: []string{m("match"), "context"}}, allow); len(v) > 0 {
		t.Errorf("allowed imports reported: %q", v)
	}
	if v := feedOrSQLViolations(pkgInfo{path: "scheduler"},
		map[string]string{"a.go": "// a round selects the layers to update"}); len(v) > 0 {
		t.Errorf("prose reported as SQL: %q", v)
	}
}
