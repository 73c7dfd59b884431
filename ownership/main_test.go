package ownership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// node is one coordinator under test, on its own pool.
type node struct {
	name string
	c    *Coordinator
	pool *pgxpool.Pool
	stop context.CancelFunc
	done chan error
}

// pause holds every goroutine of the coordinator that would renew, reread
// or decide: the instance hangs while its connections stay open.
func (n *node) pause() {
	ch := make(chan struct{})
	n.c.hold.Store(&ch)
}

func (n *node) resume() {
	if p := n.c.hold.Swap(nil); p != nil {
		close(*p)
	}
}

// halt cancels the coordinator and waits for Run to return.
func (n *node) halt(t *testing.T) error {
	t.Helper()
	n.stop()
	select {
	case err := <-n.done:
		n.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Run did not return", n.name)
		return nil
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startNode(t *testing.T, db *pgtest.DB, name string, opts Options) *node {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = AppName(name)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts.Name = name
	if opts.Lease == 0 {
		opts.Lease = 1500 * time.Millisecond
	}
	opts.Logger = testLogger(t).With("node", name)
	c, err := New(pool, db.DSN, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{name: name, c: c, pool: pool, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		n.resume()
		cancel()
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%s: Run did not return\n%s", name, buf)
		}
		pool.Close()
	})
	return n
}

// waitFor waits until cond holds, rechecking it at every change of any
// node's view, and fails the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool, nodes ...*node) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		cases := make([]reflect.SelectCase, 0, len(nodes)+1)
		for _, n := range nodes {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(n.c.Changes())})
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

func tagKeys(n int) []cluster.Key {
	keys := make([]cluster.Key, n)
	for i := range keys {
		keys[i] = cluster.Key{Kind: cluster.KindTags, Facility: "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1", Bucket: i}
	}
	return keys
}

// ownedOnce reports whether the live nodes' views hold every key exactly
// once and no other.
func ownedOnce(keys []cluster.Key, nodes ...*node) bool {
	seen := map[cluster.Key]int{}
	for _, n := range nodes {
		v := n.c.View()
		if v.Instance == 0 {
			return false
		}
		for k := range v.Claims {
			seen[k]++
		}
	}
	if len(seen) != len(keys) {
		return false
	}
	for _, k := range keys {
		if seen[k] != 1 {
			return false
		}
	}
	return true
}

type dbOwner struct {
	ID    int32
	Owner int32
	Epoch int64
}

// owners reads the owner and epoch of every cluster by key.
func owners(t *testing.T, db *pgtest.DB) map[string]dbOwner {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		"SELECT key, id, COALESCE(owner, 0), epoch FROM cuesched.cluster")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dbOwner{}
	var key string
	var o dbOwner
	if _, err := pgx.ForEachRow(rows, []any{&key, &o.ID, &o.Owner, &o.Epoch}, func() error {
		out[key] = o
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// agrees checks that the database says what the views say.
func agrees(t *testing.T, db *pgtest.DB, nodes ...*node) {
	t.Helper()
	rows := owners(t, db)
	for _, n := range nodes {
		v := n.c.View()
		for k, cl := range v.Claims {
			if r := rows[k.String()]; r.Owner != v.Instance || r.Epoch != cl.Epoch || r.ID != cl.ID {
				t.Errorf("%s holds %s as %+v (instance %d), the database says %+v", n.name, k, cl, v.Instance, r)
			}
		}
	}
}

func countsWithinOne(nodes ...*node) bool {
	lo, hi := -1, 0
	for _, n := range nodes {
		c := len(n.c.View().Claims)
		if lo < 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	return hi-lo <= 1
}

func leaders(nodes ...*node) int {
	k := 0
	for _, n := range nodes {
		if n.c.View().Leader {
			k++
		}
	}
	return k
}

// fence runs n's Fence on the cluster in a new transaction of n's pool.
// Connections of the pool may have been ended: a failure to begin is
// retried.
func fence(t *testing.T, n *node, clusterID int32) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		tx, err := n.pool.Begin(ctx)
		if err == nil {
			err = n.c.Fence(ctx, tx, clusterID)
			tx.Rollback(ctx)
			if err == nil || errors.Is(err, ErrNotOwner) {
				return err
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("fence cluster %d: %v", clusterID, err)
		}
	}
}

// terminate ends every session of the node (what a dead process or a
// restarted database looks like to it), in the test's database alone: the
// tests in parallel use the same instance names.
func terminate(t *testing.T, db *pgtest.DB, n *node) int {
	t.Helper()
	var k int
	err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`, AppName(n.name)).Scan(&k)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startNodes(t *testing.T, db *pgtest.DB, k int, opts Options, keys []cluster.Key) []*node {
	t.Helper()
	var nodes []*node
	for i := range k {
		n := startNode(t, db, fmt.Sprintf("n%d", i+1), opts)
		n.c.SetClusters(keys)
		nodes = append(nodes, n)
	}
	waitFor(t, "every cluster owned once, counts within one, one leader", func() bool {
		return ownedOnce(keys, nodes...) && countsWithinOne(nodes...) && leaders(nodes...) == 1
	}, nodes...)
	agrees(t, db, nodes...)
	return nodes
}

func others(nodes []*node, not *node) []*node {
	return slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == not })
}

func leaderOf(nodes []*node) *node {
	for _, n := range nodes {
		if n.c.View().Leader {
			return n
		}
	}
	return nil
}

// testutilValue reads a gauge's or a counter's value.
func testutilValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Gauge != nil {
		return out.Gauge.GetValue()
	}
	return out.Counter.GetValue()
}
