package match_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/scenario"
)

// Golden scenarios live in testdata/*.test, in the scenario language of
// package internal/scenario (its README.md has the syntax): a small farm, its
// waiting work, and what matching should book, what should wait and why.
// Each file's rounds are planned with match.Plan (scenario.Run).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden scenarios in testdata")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			sc, err := scenario.ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := scenario.Run(sc)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range sc.Check(out) {
				t.Error(err)
			}
			if t.Failed() {
				t.Logf("outcome:\n%s", out)
			}
		})
	}
}
