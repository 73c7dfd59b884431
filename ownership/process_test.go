package ownership

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	ossignal "os/signal"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// The process tests run coordinators as real processes: this test binary
// started again with TestHelperProcess selected and the helper's settings
// in the environment.
const (
	helperEnv      = "CUESCHED_OWNERSHIP_HELPER" // instance name
	helperDSNEnv   = "CUESCHED_OWNERSHIP_DSN"
	helperLeaseEnv = "CUESCHED_OWNERSHIP_LEASE"
	helperKeysEnv  = "CUESCHED_OWNERSHIP_KEYS"
)

// helperView is what a helper prints at every change of its view.
type helperView struct {
	Instance int32               `json:"instance"`
	Leader   bool                `json:"leader"`
	Claims   map[string][2]int64 `json:"claims"` // key -> [cluster id, epoch]
}

// fenceResult is a helper's answer to "fence <id>...".
type fenceResult struct {
	ID       int32  `json:"id"`
	OK       bool   `json:"ok"`
	Instance int32  `json:"instance"` // the helper's registration when it fenced
	Err      string `json:"err"`
}

// TestHelperProcess is one coordinator in a process of its own. It prints
// "VIEW {json}" at every change of its view and answers "fence <cluster
// id>..." on stdin with "FENCE [json]"; SIGTERM stops it gracefully.
func TestHelperProcess(t *testing.T) {
	name := os.Getenv(helperEnv)
	if name == "" {
		t.Skip("helper process for the process tests")
	}
	lease, _ := time.ParseDuration(os.Getenv(helperLeaseEnv))
	nkeys, _ := strconv.Atoi(os.Getenv(helperKeysEnv))
	dsn := os.Getenv(helperDSNEnv)
	ctx, stop := ossignal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = AppName(name)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c, err := New(pool, dsn, Options{Name: name, Lease: lease,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("helper", name)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetClusters(tagKeys(nkeys))

	var out sync.Mutex
	emit := func(kind string, v any) {
		b, _ := json.Marshal(v)
		out.Lock()
		fmt.Printf("%s %s\n", kind, b)
		out.Unlock()
	}
	go func() {
		for {
			ch := c.Changes()
			v := c.View()
			hv := helperView{Instance: v.Instance, Leader: v.Leader, Claims: map[string][2]int64{}}
			for k, cl := range v.Claims {
				hv.Claims[k.String()] = [2]int64{int64(cl.ID), cl.Epoch}
			}
			emit("VIEW", hv)
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	go answerFences(ctx, c, pool, emit)
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// answerFences answers the helper's "fence <cluster id>..." lines on stdin
// with "FENCE [json]".
func answerFences(ctx context.Context, c *Coordinator, pool *pgxpool.Pool, emit func(kind string, v any)) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "fence" {
			continue
		}
		var res []fenceResult
		for _, f := range fields[1:] {
			id, _ := strconv.Atoi(f)
			r := fenceResult{ID: int32(id), Instance: c.View().Instance}
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			tx, err := pool.Begin(fctx)
			for err != nil && fctx.Err() == nil { // connections ended while stopped
				tx, err = pool.Begin(fctx)
			}
			if err == nil {
				err = c.Fence(fctx, tx, int32(id))
				tx.Rollback(fctx)
			}
			cancel()
			r.OK = err == nil
			if err != nil {
				r.Err = err.Error()
			}
			res = append(res, r)
		}
		emit("FENCE", res)
	}
}

// proc is a helper process seen from the test.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	view    helperView
	changed chan struct{}
	fences  chan []fenceResult
	exited  chan struct{}
}

func (p *proc) View() helperView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view
}

func (p *proc) Changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func startProc(t *testing.T, db *pgtest.DB, name string, lease time.Duration, keys int) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, helperDSNEnv+"="+db.DSN,
		helperLeaseEnv+"="+lease.String(), helperKeysEnv+"="+strconv.Itoa(keys))
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, changed: make(chan struct{}), fences: make(chan []fenceResult, 4),
		exited: make(chan struct{})}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			kind, body, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "VIEW":
				var v helperView
				if json.Unmarshal([]byte(body), &v) == nil {
					p.mu.Lock()
					p.view = v
					close(p.changed)
					p.changed = make(chan struct{})
					p.mu.Unlock()
				}
			case "FENCE":
				var r []fenceResult
				if json.Unmarshal([]byte(body), &r) == nil {
					p.fences <- r
				}
			}
		}
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// kill ends the process at once and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	<-p.exited
}

func (p *proc) fence(t *testing.T, ids []int32) []fenceResult {
	t.Helper()
	var b strings.Builder
	b.WriteString("fence")
	for _, id := range ids {
		fmt.Fprintf(&b, " %d", id)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(p.stdin, b.String()); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-p.fences:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not answer fence", p.name)
		return nil
	}
}

// waitProcs waits until cond holds, rechecking at every view change of any
// of procs.
func waitProcs(t *testing.T, what string, cond func() bool, procs ...*proc) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		cases := make([]reflect.SelectCase, 0, len(procs)+1)
		for _, p := range procs {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.Changes())})
		}
		if cond() {
			return
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline)})
		if i, _, _ := reflect.Select(cases); i == len(cases)-1 {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// procsOwnOnce reports whether the procs' views hold keys 0..n-1 exactly
// once, spread evenly (no moves under way), and the procs are all
// registered; with leader set, one of them leads.
func procsOwnOnce(n int, leader bool, procs ...*proc) bool {
	seen := map[string]int{}
	leaders := 0
	for _, p := range procs {
		v := p.View()
		if v.Instance == 0 {
			return false
		}
		if v.Leader {
			leaders++
		}
		for k := range v.Claims {
			seen[k]++
		}
	}
	if len(seen) != n || (leader && leaders != 1) {
		return false
	}
	lo, hi := n, 0
	for _, p := range procs {
		lo, hi = min(lo, len(p.View().Claims)), max(hi, len(p.View().Claims))
	}
	if hi-lo > 1 {
		return false // moves under way
	}
	for _, k := range tagKeys(n) {
		if seen[k.String()] != 1 {
			return false
		}
	}
	return true
}

// TestProcessTakeover kills one of three coordinator processes with
// SIGKILL and measures the time until its clusters are owned again. The
// default suite runs 3 trials; CUESCHED_BENCH=1 runs 20 and reports p50
// and p99.
func TestProcessTakeover(t *testing.T) {
	t.Parallel()
	trials := 3
	if os.Getenv("CUESCHED_BENCH") == "1" {
		trials = 20
	}
	const keys = 12
	db := pgtest.NewDB(t)
	seq := 0
	start := func() *proc {
		seq++
		return startProc(t, db, fmt.Sprintf("p%d", seq), 2*time.Second, keys)
	}
	procs := []*proc{start(), start(), start()}
	var took []time.Duration
	for trial := range trials {
		waitProcs(t, "three processes sharing every cluster", func() bool {
			return procsOwnOnce(keys, true, procs...)
		}, procs...)
		// Alternate between killing the leader and killing a follower.
		victim := procs[0]
		for _, p := range procs {
			if p.View().Leader == (trial%2 == 0) {
				victim = p
				break
			}
		}
		rest := slices.DeleteFunc(slices.Clone(procs), func(p *proc) bool { return p == victim })
		t0 := time.Now()
		victim.cmd.Process.Kill()
		waitProcs(t, "the killed process's clusters owned again", func() bool {
			return procsOwnOnce(keys, true, rest...)
		}, rest...)
		took = append(took, time.Since(t0))
		<-victim.exited
		procs = append(rest, start())
	}
	slices.Sort(took)
	p := func(q float64) time.Duration { return took[min(len(took)-1, int(q*float64(len(took))))] }
	t.Logf("takeover after kill -9 over %d trials: p50 %v, p99 %v, max %v (all: %v)",
		len(took), p(0.50), p(0.99), took[len(took)-1], took)
}

// TestProcessStopped stops one of three coordinator processes with SIGSTOP
// for longer than its lease: its clusters move to the others, and after
// SIGCONT its fence refuses every one of them.
func TestProcessStopped(t *testing.T) {
	t.Parallel()
	const keys = 9
	db := pgtest.NewDB(t)
	procs := []*proc{}
	for i := range 3 {
		procs = append(procs, startProc(t, db, fmt.Sprintf("s%d", i+1), 2*time.Second, keys))
	}
	waitProcs(t, "three processes sharing every cluster", func() bool {
		return procsOwnOnce(keys, true, procs...)
	}, procs...)
	victim := procs[0]
	before := victim.View()
	var ids []int32
	for _, c := range before.Claims {
		ids = append(ids, int32(c[0]))
	}
	for _, r := range victim.fence(t, ids) {
		if !r.OK {
			t.Fatalf("fence on its own cluster %d before stopping: %s", r.ID, r.Err)
		}
	}

	victim.signal(syscall.SIGSTOP)
	rest := procs[1:]
	waitProcs(t, "the stopped process's clusters owned by the others", func() bool {
		return procsOwnOnce(keys, true, rest...)
	}, rest...)
	victim.signal(syscall.SIGCONT)
	for _, r := range victim.fence(t, ids) {
		// It may have registered again and won a cluster back, as a new
		// instance: that is a new claim, not the old one.
		if r.OK && r.Instance == before.Instance {
			t.Errorf("after SIGCONT the stopped process fenced cluster %d with its old registration %d",
				r.ID, before.Instance)
		}
	}
	waitProcs(t, "the woken process back in", func() bool {
		v := victim.View()
		return v.Instance != before.Instance && procsOwnOnce(keys, true, procs...)
	}, procs...)
}
