package archtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// mayImport is, for every production package (its path in the module), the
// packages of the module it may import in its non-test files. The layers
// follow the data path and import only downward: the feed (cdc) and the pure
// vocabulary (cluster, match) at the bottom; the replica (cache), the queue,
// counters, booking (dispatch) and launching above them; the loop
// (scheduler) knows only its ports' vocabulary; internal/instance and the
// commands join everything. A new package, or a new arrow, is a decision:
// add it here with the reason in the commit.
var mayImport = map[string][]string{
	"cluster":           {},
	"match":             {},
	"match/matchtest":   {"match"},
	"internal/scenario": {"match", "match/matchtest"},
	"cdc":               {"internal/wait"},
	"cache":             {"cdc", "cluster", "match", "internal/metrics", "internal/wait"},
	"queue":             {"cdc", "cluster", "match", "internal/metrics", "internal/wait"},
	"counters":          {"internal/metrics", "internal/wait"},
	"dispatch/writeset": {"match"},
	"dispatch":          {"cluster", "counters", "dispatch/writeset", "internal/metrics", "match"},
	"launch":            {"cluster", "counters", "dispatch", "internal/metrics", "internal/rqd", "match"},
	"ownership":         {"cdc", "cluster", "internal/config"},
	"scheduler":         {"cluster", "dispatch", "internal/metrics", "match", "ownership"},
	"scheduler/schedulertest": {"cluster", "dispatch", "internal/metrics", "internal/scenario", "match",
		"match/matchtest", "ownership", "scheduler"},
	"status":  {"cdc", "cluster", "match", "queue"},
	"explain": {"cache", "cluster", "internal/preflight", "match", "queue", "reservation"},
	// Reservations in the database (issue 15): their rows, and the running
	// frames their planning reads.
	"reservation":      {"match"},
	"shows":            {"counters", "internal/wait"},
	"migrations":       {},
	"internal/config":  {},
	"internal/grants":  {},
	"internal/metrics": {},
	"internal/wait":    {},
	"internal/preflight": {
		"internal/grants",
	},
	"internal/rqd":        {},
	"internal/audit":      {"internal/wait"},
	"internal/activity":   {},
	"internal/writefloor": {"dispatch/writeset", "match"},
	// Self-contained HTML pages of charts: the demo's report and sim's.
	"internal/htmlreport": {},
	"internal/instance": {"cache", "cdc", "cluster", "counters", "dispatch", "internal/activity", "internal/audit",
		"internal/config", "internal/metrics", "launch", "match", "ownership", "queue", "reservation", "scheduler",
		"status"},
	// The simulator (issue 14): the workload model reads its scenario
	// files; the simulation drives the loop (scheduler) through in-memory
	// ports over the real host index (cache) and matching.
	"sim/workload": {},
	// Its HTML report draws with internal/htmlreport.
	"sim": {"cache", "cluster", "dispatch", "internal/htmlreport", "match", "ownership", "scheduler", "sim/workload"},
	// A replay reads a Cuebot database's history into the workload model,
	// its tags and services parsed as the host cache and the queue do.
	"sim/replay": {"cluster", "queue", "sim/workload"},
	// deploy holds the deployment files and the metric names their
	// expressions read, for tests; nothing in production imports it.
	"deploy": {},
	"cmd/cuesched": {"cdc", "explain", "internal/audit", "internal/config", "internal/grants", "internal/instance",
		"internal/preflight", "migrations", "ownership", "scheduler", "shows", "sim", "sim/replay", "sim/workload", "status"},
	// Writes the texts the settings generate (README table, example file).
	"internal/config/gen": {"internal/config"},
}

// pureOf are the packages whose logic must do no I/O: they are tested with
// table and fuzz tests alone. ioPackages (and anything under them) are what
// I/O means here; fmt reaches os, so os itself is checked as a direct import.
var (
	pure        = []string{"cluster", "match"}
	ioPackages  = []string{"net", "os/exec", "database/sql", "github.com/jackc", "google.golang.org/grpc"}
	ioDirectOfs = []string{"os", "io/fs", "syscall", "os/signal", "net/http"}
)

// noFeedOrSQL are the packages that must reach the database only through
// their ports: no pgx, no feed types, no SQL text.
var noFeedOrSQL = []string{"scheduler"}

// pkgInfo is what `go list` says of one package of the module.
type pkgInfo struct {
	path    string   // relative to the module
	dir     string   // on disk
	imports []string // direct imports of its non-test files, as written
	deps    []string // every dependency of its non-test files
	files   []string // its non-test Go files
}

func listModule(t *testing.T) []pkgInfo {
	t.Helper()
	tmpl := `{{.ImportPath}}|{{.Dir}}|{{join .Imports " "}}|{{join .Deps " "}}|{{join .GoFiles " "}}`
	var out []pkgInfo
	for _, l := range goList(t, "-f", tmpl, module+"/...") {
		f := strings.SplitN(l, "|", 5)
		if len(f) != 5 {
			t.Fatalf("go list line %q: want 5 fields", l)
		}
		out = append(out, pkgInfo{path: rel(f[0]), dir: f[1], imports: strings.Fields(f[2]),
			deps: strings.Fields(f[3]), files: strings.Fields(f[4])})
	}
	return out
}

// rel is a module package's path inside the module ("" for other paths).
func rel(importPath string) string {
	if importPath == module {
		return "."
	}
	p, ok := strings.CutPrefix(importPath, module+"/")
	if !ok {
		return ""
	}
	return p
}

// importViolations is what a package imports of the module beyond its
// allow-list; a production package missing from the list is itself one.
func importViolations(p pkgInfo, allow map[string][]string) []string {
	if p.path == "internal/archtest" || p.path == "internal/e2e" || p.path == "cmd/cuesched-demo" ||
		inTestWorld(module+"/"+p.path) {
		return nil // tests, the demo and the test world: arch_test.go's rules
	}
	list, ok := allow[p.path]
	if !ok {
		return []string{fmt.Sprintf("%s is not in archtest's mayImport: add it with the packages it may import", p.path)}
	}
	var out []string
	for _, imp := range p.imports {
		r := rel(imp)
		if r == "" || slices.Contains(list, r) {
			continue
		}
		out = append(out, fmt.Sprintf("%s imports %s, which its line in archtest's mayImport does not allow "+
			"(the layers import only downward: move the code, or add the arrow with a reason)", p.path, r))
	}
	return out
}

// ioViolations is what a pure package reaches that does I/O.
func ioViolations(p pkgInfo) []string {
	var out []string
	for _, d := range p.deps {
		for _, io := range ioPackages {
			if d == io || strings.HasPrefix(d, io+"/") {
				out = append(out, fmt.Sprintf("%s must do no I/O but depends on %s", p.path, d))
			}
		}
	}
	for _, imp := range p.imports {
		if slices.Contains(ioDirectOfs, imp) {
			out = append(out, fmt.Sprintf("%s must do no I/O but imports %s", p.path, imp))
		}
	}
	return out
}

// sqlText matches the start of a SQL statement in Go source (the project
// writes SQL keywords in capitals; prose does not).
var sqlText = regexp.MustCompile(`\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|LOCK\s+TABLE)`)

// feedOrSQLViolations is what a loop package holds of the database: pgx,
// the feed, or SQL in its source (sources maps file name to text).
func feedOrSQLViolations(p pkgInfo, sources map[string]string) []string {
	var out []string
	for _, imp := range p.imports {
		if strings.HasPrefix(imp, "github.com/jackc/") || rel(imp) == "cdc" {
			out = append(out, fmt.Sprintf("%s imports %s: the loop reaches the database and the feed only "+
				"through its ports (scheduler/ports.go)", p.path, imp))
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range sources {
			if !yield(n) {
				return
			}
		}
	}) {
		if m := sqlText.FindString(sources[name]); m != "" {
			out = append(out, fmt.Sprintf("%s holds SQL (%q in %s): SQL belongs behind a port", p.path, m, name))
		}
	}
	return out
}

func readSources(t *testing.T, p pkgInfo) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range p.files {
		b, err := os.ReadFile(filepath.Join(p.dir, f))
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		out[f] = string(b)
	}
	return out
}

// TestLayers checks every production package of the module against the
// rules above.
func TestLayers(t *testing.T) {
	t.Parallel()
	pkgs := listModule(t)
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.path] = true
		for _, v := range importViolations(p, mayImport) {
			t.Error(v)
		}
		if slices.Contains(pure, p.path) {
			for _, v := range ioViolations(p) {
				t.Error(v)
			}
		}
		if slices.Contains(noFeedOrSQL, p.path) {
			for _, v := range feedOrSQLViolations(p, readSources(t, p)) {
				t.Error(v)
			}
		}
	}
	// A rule about a package that is gone checks nothing.
	for _, p := range append(append([]string{}, pure...), noFeedOrSQL...) {
		if !seen[p] {
			t.Errorf("archtest names %s, which go list no longer finds: update the rules", p)
		}
	}
}
