package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cuesched/cuesched/internal/pgtest"
)

// binary is the cuesched binary the tests run, built once in TestMain.
var binary string

// TestMain builds cuesched, then runs the tests on the package's throwaway
// PostgreSQL cluster. The binary goes to one fixed path per build mode
// (pgtest.Main exits the process, so nothing could remove a directory of
// its own afterwards); it is built under a temporary name and renamed into
// place, so runs at the same time never see half a file.
func TestMain(m *testing.M) {
	mode := "cuesched"
	args := []string{"build"}
	if raceEnabled {
		// The instances run under the race detector when the tests do.
		mode += "-race"
		args = append(args, "-race")
	}
	dir := filepath.Join(os.TempDir(), "cuesched-e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, mode)
	tmp := fmt.Sprintf("%s.%d", binary, os.Getpid())
	cmd := exec.Command("go", append(args, "-o", tmp, "github.com/cuesched/cuesched/cmd/cuesched")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build cuesched:", err)
		os.Remove(tmp)
		os.Exit(1)
	}
	if err := os.Rename(tmp, binary); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Remove(tmp)
		os.Exit(1)
	}
	pgtest.Main(m)
}
