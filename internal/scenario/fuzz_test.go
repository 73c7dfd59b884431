package scenario

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: no input makes the parser (or building match's inputs from what
// it accepts) panic. The seed corpus is every scenario in the repository.
func FuzzParse(f *testing.F) {
	var files []string
	for _, dir := range []string{"../../match/testdata", "../../explain/testdata", "../../scheduler/testdata"} {
		m, err := filepath.Glob(filepath.Join(dir, "*.test"))
		if err != nil {
			f.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		f.Fatal("no scenario files for the seed corpus")
	}
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		sc, err := Parse("fuzz.test", src)
		if err != nil {
			return
		}
		sc.Inputs()
		sc.Check(NewOutcome())
	})
}
