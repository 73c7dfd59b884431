package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/cuesched/cuesched"

// testWorld is the folder of the test world: schema, seeder, simulated
// Cuebot, fake RQDs, throwaway clusters. Production never links it.
const testWorld = module + "/internal/testworld"

// mayUseTestWorld are the packages besides the test world's own that may
// import it: the acceptance tests and the demo command.
var mayUseTestWorld = []string{module + "/internal/e2e", module + "/cmd/cuesched-demo"}

func inTestWorld(pkg string) bool {
	return pkg == testWorld || strings.HasPrefix(pkg, testWorld+"/")
}

// goList runs `go list` in the module with the arguments and returns its
// lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<24) // a package's dependencies are one long line
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read go list %s: %v", strings.Join(args, " "), err)
	}
	return lines
}

// TestBinaryLinksNoTestWorld: the binary deployed beside Cuebot links no
// package of the test world, directly or through another.
func TestBinaryLinksNoTestWorld(t *testing.T) {
	for _, dep := range goList(t, "-deps", "-f", "{{.ImportPath}}", module+"/cmd/cuesched") {
		if inTestWorld(dep) {
			t.Errorf("cmd/cuesched links %s: production code must not import internal/testworld (move what it needs into a production package)", dep)
		}
	}
}

// TestProductionImportsNoTestWorld: no package outside the test world, the
// acceptance tests and the demo depends on the test world in its non-test
// files (test files may).
func TestProductionImportsNoTestWorld(t *testing.T) {
	lines := goList(t, "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...")
	checked := 0
	for _, l := range lines {
		pkg, deps, _ := strings.Cut(l, " ")
		if inTestWorld(pkg) || allowed(pkg) {
			continue
		}
		checked++
		for _, dep := range strings.Fields(deps) {
			if inTestWorld(dep) {
				t.Errorf("%s depends on %s in its non-test files: only tests, internal/e2e and cmd/cuesched-demo may import internal/testworld", pkg, dep)
			}
		}
	}
	if checked == 0 {
		t.Fatalf("go list found no production package in %s", module)
	}
}

// TestDemoLinksTestWorld keeps the two tests above honest: were the test
// world's path to drift from testWorld, they would pass on nothing.
func TestDemoLinksTestWorld(t *testing.T) {
	for _, dep := range goList(t, "-deps", "-f", "{{.ImportPath}}", module+"/cmd/cuesched-demo") {
		if inTestWorld(dep) {
			return
		}
	}
	t.Fatalf("cmd/cuesched-demo links no package under %s: has the test world moved? update archtest", testWorld)
}

func allowed(pkg string) bool {
	for _, p := range mayUseTestWorld {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}
