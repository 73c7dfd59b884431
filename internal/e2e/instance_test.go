package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/ownership"
)

// output collects a process's output and tells waiters of every write.
type output struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.b.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return n, err
}

// snapshot returns the output so far and a channel closed at the next write.
func (o *output) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String(), o.changed
}

func (o *output) String() string {
	s, _ := o.snapshot()
	return s
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// instance is one `cuesched run` process.
type instance struct {
	name string
	app  string // its sessions' application_name
	cmd  *exec.Cmd
	out  *output
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, once done is closed
}

// startInstance starts `cuesched run --dry-run` on db as instance name. Its
// output is kept and printed (the end of it) if the test fails. The process
// is killed at the end of the test if it still runs.
func startInstance(t *testing.T, db *pgtest.DB, name string, extra ...string) *instance {
	t.Helper()
	return startBinary(t, binary, db.DSN, name, extra...)
}

// startInstanceOn is startInstance on the database dsn names (another role's
// connection, for one).
func startInstanceOn(t *testing.T, dsn, name string, extra ...string) *instance {
	t.Helper()
	return startBinary(t, binary, dsn, name, extra...)
}

// startBinary is startInstanceOn with the cuesched binary at path bin.
func startBinary(t *testing.T, bin, dsn, name string, extra ...string) *instance {
	t.Helper()
	return startRun(t, bin, dsn, name, append([]string{"--dry-run"}, extra...)...)
}

// startLive is startInstance without --dry-run: the instance launches what
// it books on the RQDs of its hosts, at rqdPort.
func startLive(t *testing.T, db *pgtest.DB, name string, rqdPort int, extra ...string) *instance {
	t.Helper()
	return startRun(t, binary, db.DSN, name, append([]string{"--rqd-port", strconv.Itoa(rqdPort)}, extra...)...)
}

// startRun starts `cuesched run` of the binary bin on dsn as instance name,
// with the flags extra.
func startRun(t *testing.T, bin, dsn, name string, extra ...string) *instance {
	t.Helper()
	args := append([]string{"run", "--db", dsn, "--metrics-addr", "127.0.0.1:0", "--instance", name}, extra...)
	cmd := exec.Command(bin, args...)
	// Settings come from the flags alone: a CUESCHED_* variable of the
	// developer's shell must not change what the test runs.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CUESCHED_") && !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	inst := &instance{name: name, app: ownership.AppName(name), cmd: cmd, out: newOutput(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = inst.out, inst.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		inst.err = cmd.Wait()
		close(inst.done)
	}()
	t.Cleanup(func() {
		inst.kill()
		if t.Failed() {
			t.Logf("output of instance %s:\n%s", name, tail(inst.out.String(), 150))
		}
		// CUESCHED_E2E_LOGS=dir keeps every instance's whole output.
		if dir := os.Getenv("CUESCHED_E2E_LOGS"); dir != "" {
			path := filepath.Join(dir, t.Name()+"."+name+".log")
			// A subtest's name holds a slash: its folder.
			err := os.MkdirAll(filepath.Dir(path), 0o755)
			if err == nil {
				err = os.WriteFile(path, []byte(inst.out.String()), 0o644)
			}
			if err != nil {
				t.Logf("keep output of %s: %v", name, err)
			}
		}
	})
	return inst
}

func (i *instance) exited() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

func (i *instance) signal(sig syscall.Signal) {
	if !i.exited() {
		_ = i.cmd.Process.Signal(sig)
	}
}

// kill ends the process at once (a stopped one too) and waits for it.
func (i *instance) kill() {
	i.signal(syscall.SIGCONT)
	i.signal(syscall.SIGKILL)
	<-i.done
}

// stop sends SIGTERM and requires a clean exit (status 0) within a minute.
func (i *instance) stop(t *testing.T) {
	t.Helper()
	i.signal(syscall.SIGTERM)
	select {
	case <-i.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM", i.name)
	}
	if i.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM", i.name, i.err)
	}
}

// waitOutput waits until the process's output matches re and returns the
// first match's submatches.
func (i *instance) waitOutput(t *testing.T, within time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		s, changed := i.out.snapshot()
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
		select {
		case <-changed:
		case <-i.done:
			if m := re.FindStringSubmatch(i.out.String()); m != nil {
				return m
			}
			t.Fatalf("%s exited (%v) before its output matched %s", i.name, i.err, re)
		case <-deadline:
			t.Fatalf("%s: output did not match %s within %s", i.name, re, within)
		}
	}
}

var metricsAddrRE = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

// metricsAddr is where the instance serves /metrics.
func (i *instance) metricsAddr(t *testing.T) string {
	t.Helper()
	return i.waitOutput(t, time.Minute, metricsAddrRE)[1]
}

// registration is the instance's id in cuesched.instance (0: not
// registered now).
func (i *instance) registration(t *testing.T, pool *pgxpool.Pool) int32 {
	t.Helper()
	var id int32
	err := pool.QueryRow(t.Context(), `SELECT coalesce(max(id), 0) FROM cuesched.instance WHERE app_name = $1`,
		i.app).Scan(&id)
	if err != nil {
		t.Fatalf("registration of %s: %v", i.name, err)
	}
	return id
}

// waitFor checks cond until it holds, failing the test after within or as
// soon as one of the watched instances exits. Across processes the database
// is the only signal, so conditions read it.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool, watch ...*instance) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		for _, i := range watch {
			if i.exited() {
				t.Fatalf("waiting for %s: instance %s exited (%v)", what, i.name, i.err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		<-tick.C
	}
}

// count runs a query returning one number.
func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", strings.Join(strings.Fields(sql), " "), err)
	}
	return n
}

func exec1(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", strings.Join(strings.Fields(sql), " "), err)
	}
}

// benchOn reports whether the long benchmark versions run.
func benchOn() bool { return os.Getenv("CUESCHED_BENCH") == "1" }

// isCtxErr is true for errors a cancelled driver goroutine returns.
func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
