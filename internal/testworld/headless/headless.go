// Package headless loads a page in headless Chromium for tests, and gives
// back the DOM once the page's scripts have run: report tests read the
// marks their pages' scripts set (package internal/htmlreport's
// data-drawn).
package headless

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// DumpDOM loads the file page in headless Chromium and returns the DOM it
// ends with. Without chromium on the PATH the test is skipped, or fails
// under CI (CI=true), where scripts/ensure-postgres.sh installs it.
func DumpDOM(t testing.TB, page string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is missing: scripts/ensure-postgres.sh installs it (Debian's chromium package)")
		}
		t.Skip("chromium is missing, so the page is not loaded in a browser: apt-get install -y chromium")
	}
	abs, err := filepath.Abs(page)
	if err != nil {
		t.Fatal(err)
	}
	// A loaded machine starts Chromium slowly; the deadline only stops a
	// hung browser.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+filepath.Join(t.TempDir(), "profile"), "--virtual-time-budget=5000", "--dump-dom",
		"file://"+abs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(dom)
}
