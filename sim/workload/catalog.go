package workload

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

//go:embed scenarios/*.sim
var committed embed.FS

// List is every committed scenario, by name.
func List() ([]*Workload, error) {
	names, err := fs.Glob(committed, "scenarios/*.sim")
	if err != nil {
		return nil, err
	}
	var out []*Workload
	for _, n := range names { // Glob sorts
		src, err := committed.ReadFile(n)
		if err != nil {
			return nil, err
		}
		w, err := Parse(n, src)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// Load is the committed scenario of that name, or else the scenario file
// at that path.
func Load(nameOrFile string) (*Workload, error) {
	if src, err := committed.ReadFile(path.Join("scenarios", nameOrFile+".sim")); err == nil &&
		!strings.ContainsAny(nameOrFile, "/\\") {
		return Parse(path.Join("scenarios", nameOrFile+".sim"), src)
	}
	w, err := ParseFile(nameOrFile)
	if errors.Is(err, os.ErrNotExist) {
		all, _ := List()
		names := make([]string, len(all))
		for i, w := range all {
			names[i] = w.Name
		}
		return nil, fmt.Errorf("unknown scenario %q: neither a committed scenario (%s: cuesched sim --list) nor a file",
			nameOrFile, strings.Join(names, ", "))
	}
	return w, err
}
