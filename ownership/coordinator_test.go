package ownership

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestOwnedExactlyOnceAndFenced(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	keys := tagKeys(10)
	nodes := startNodes(t, db, 3, Options{}, keys)

	// Each node's fence passes on its own clusters and fails on the others'.
	for _, n := range nodes {
		v := n.c.View()
		for _, o := range others(nodes, n) {
			for _, cl := range o.c.View().Claims {
				if err := fence(t, n, cl.ID); !errors.Is(err, ErrNotOwner) {
					t.Errorf("%s fenced %s's cluster %s: %v", n.name, o.name, cl.Key, err)
				}
			}
		}
		for _, cl := range v.Claims {
			if err := fence(t, n, cl.ID); err != nil {
				t.Errorf("%s fence on its own %s: %v", n.name, cl.Key, err)
			}
		}
	}

	// The batch form (dispatch.Fence) says the same, wrapping Options.Fenced.
	n := nodes[0]
	var own Claim
	for _, cl := range n.c.View().Claims {
		own = cl
	}
	var theirs Claim
	for _, cl := range nodes[1].c.View().Claims {
		theirs = cl
	}
	sentinel := errors.New("fenced")
	n.c.opts.Fenced = sentinel
	ctx := context.Background()
	for _, tc := range []struct {
		id   int32
		fail bool
	}{{own.ID, false}, {theirs.ID, true}} {
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		n.c.Queue(b, tc.id)
		conn, err := n.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = conn.SendBatch(ctx, b).Close()
		conn.Exec(ctx, "ROLLBACK")
		conn.Release()
		if tc.fail != (errors.Is(err, ErrNotOwner) && errors.Is(err, sentinel)) || (!tc.fail && err != nil) {
			t.Errorf("Queue on cluster %d: %v", tc.id, err)
		}
	}

	// A new key gets a row and an owner; a key gone loses both.
	keys2 := append(keys[1:], cluster.Key{Kind: cluster.KindAlloc, Facility: "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1",
		Alloc: "00000000-0000-0000-0000-000000000000"})
	for _, n := range nodes {
		n.c.SetClusters(keys2)
	}
	waitFor(t, "the new cluster set owned once", func() bool { return ownedOnce(keys2, nodes...) }, nodes...)
	rows := owners(t, db)
	if _, ok := rows[keys[0].String()]; ok || len(rows) != len(keys2) {
		t.Errorf("cluster rows after the set changed: %v", rows)
	}
	agrees(t, db, nodes...)
	if got := testutilValue(t, nodes[0].c.m.Clusters); got != float64(len(keys2)) {
		t.Errorf("clusters metric %v", got)
	}
}

func TestTerminatedInstanceTakenOver(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	keys := tagKeys(9)
	nodes := startNodes(t, db, 3, Options{}, keys)
	// The leader: its peers must also elect a new one.
	victim := leaderOf(nodes)
	before := victim.c.View()
	if len(before.Claims) == 0 {
		t.Fatal("victim owns nothing")
	}
	if k := terminate(t, db, victim); k == 0 {
		t.Fatal("no session of the victim found")
	}
	// Its clusters are owned again (by the survivors or by the victim's new
	// registration) and none at the epoch it held.
	waitFor(t, "the victim's clusters owned again", func() bool {
		if !ownedOnce(keys, nodes...) || leaders(nodes...) != 1 {
			return false
		}
		v := victim.c.View()
		return v.Instance != before.Instance
	}, nodes...)
	agrees(t, db, nodes...)
	ctx := context.Background()
	for _, cl := range before.Claims {
		tx, err := victim.pool.Begin(ctx)
		for err != nil {
			tx, err = victim.pool.Begin(ctx)
		}
		var owner *int32
		var epoch int64
		err = tx.QueryRow(ctx, fenceSQL, cl.ID).Scan(&owner, &epoch)
		err = victim.c.check(cl.ID, before.Instance, cl, owner, epoch, err)
		tx.Rollback(ctx)
		if !errors.Is(err, ErrNotOwner) {
			t.Errorf("the victim's old claim on %s still fences: %v", cl.Key, err)
		}
	}
	if got := testutilValue(t, victim.c.m.SessionsLost); got < 1 {
		t.Errorf("sessions lost metric %v", got)
	}
}

func TestHungInstanceLosesClusters(t *testing.T) {
	t.Parallel()
	for _, role := range []string{"leader", "follower"} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			keys := tagKeys(9)
			nodes := startNodes(t, db, 3, Options{}, keys)
			victim := leaderOf(nodes)
			if role == "follower" {
				victim = others(nodes, victim)[0]
			}
			rest := others(nodes, victim)
			before := victim.c.View()
			var held Claim
			for _, cl := range before.Claims {
				held = cl
			}

			// A booking in flight: it holds its cluster's row FOR SHARE.
			ctx := context.Background()
			tx, err := victim.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if err := victim.c.Fence(ctx, tx, held.ID); err != nil {
				t.Fatalf("fence before hanging: %v", err)
			}

			victim.pause()
			waitFor(t, "the hung instance's clusters owned by the others", func() bool {
				return ownedOnce(keys, rest...) && leaders(rest...) == 1
			}, rest...)
			agrees(t, db, rest...)

			// The booking in flight was ended with the hung instance's sessions.
			if err := tx.Commit(ctx); err == nil {
				t.Error("the hung instance's transaction committed after its cluster was taken over")
			}
			// Still hung, it believes it owns its clusters; the database
			// refuses every one of them.
			if v := victim.c.View(); !maps.Equal(v.Claims, before.Claims) {
				t.Fatalf("the paused instance's view changed: %v", v.Claims)
			}
			for _, cl := range before.Claims {
				if err := fence(t, victim, cl.ID); !errors.Is(err, ErrNotOwner) {
					t.Errorf("the woken instance fenced %s: %v", cl.Key, err)
				}
			}

			// Woken, it notices, registers again and takes its share back.
			victim.resume()
			waitFor(t, "the woken instance back with its share", func() bool {
				v := victim.c.View()
				return v.Instance != 0 && v.Instance != before.Instance && ownedOnce(keys, nodes...) &&
					countsWithinOne(nodes...) && leaders(nodes...) == 1
			}, nodes...)
			agrees(t, db, nodes...)
		})
	}
}

func TestJoinAndLeaveMoveFew(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	keys := tagKeys(12)
	nodes := startNodes(t, db, 3, Options{}, keys)
	start := owners(t, db)

	// A fourth joins: it gets its share (3) and nothing else moves.
	n4 := startNode(t, db, "n4", Options{})
	n4.c.SetClusters(keys)
	nodes = append(nodes, n4)
	waitFor(t, "12 clusters over 4 instances", func() bool {
		return ownedOnce(keys, nodes...) && countsWithinOne(nodes...)
	}, nodes...)
	agrees(t, db, nodes...)
	joined := owners(t, db)
	if moved := moves(start, joined); moved != 3 {
		t.Errorf("join moved %d clusters, want 3", moved)
	}

	// One stops: only its clusters move, and at once.
	gone := nodes[1]
	had := gone.c.View()
	if err := gone.halt(t); err != nil {
		t.Fatal(err)
	}
	left := owners(t, db)
	for k, r := range left {
		if r.Owner == 0 || r.Owner == had.Instance {
			t.Errorf("after a graceful stop %s is owned by %d", k, r.Owner)
		}
	}
	if moved := moves(joined, left); moved != len(had.Claims) {
		t.Errorf("stop moved %d clusters, it had %d", moved, len(had.Claims))
	}
	var rows int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM cuesched.instance WHERE id = $1",
		had.Instance).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("the stopped instance's row: %d, %v", rows, err)
	}
	nodes = others(nodes, gone)
	waitFor(t, "12 clusters over 3 instances", func() bool {
		return ownedOnce(keys, nodes...) && countsWithinOne(nodes...)
	}, nodes...)
	if moved := moves(left, owners(t, db)); moved != 0 {
		t.Errorf("the leader moved %d more clusters after the stop", moved)
	}
}

// moves counts the clusters whose owner changed.
func moves(a, b map[string]dbOwner) int {
	k := 0
	for key, r := range b {
		if a[key].Owner != r.Owner {
			k++
		}
	}
	return k
}

func TestBalanceByWeightsAndDrift(t *testing.T) {
	t.Parallel()
	balanceByWeights(t, false)
}

// Work that comes in a burst is spread at once: WeightsChanged makes the
// leader check the drift without waiting for its ticker (an hour here).
func TestBalanceSoonAfterWeightsChanged(t *testing.T) {
	t.Parallel()
	balanceByWeights(t, true)
}

func balanceByWeights(t *testing.T, soon bool) {
	db := pgtest.NewDB(t)
	keys := tagKeys(12)
	var mu sync.Mutex
	weights := map[cluster.Key]int64{}
	for i, k := range keys {
		weights[k] = int64(10 + 7*i)
	}
	drift := 100 * time.Millisecond
	if soon {
		drift = time.Hour
	}
	opts := Options{DriftEvery: drift, Weights: func() map[cluster.Key]int64 {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(weights)
	}}
	var nodes []*node
	for _, name := range []string{"w1", "w2", "w3"} {
		n := startNode(t, db, name, opts)
		n.c.SetClusters(keys)
		nodes = append(nodes, n)
	}
	// The bound Balance keeps (withinBound): a cluster heavier than the
	// bound stays alone on its instance.
	balanced := func(limit float64) func() bool {
		return func() bool {
			if !ownedOnce(keys, nodes...) {
				return false
			}
			w := opts.Weights()
			var its []Item
			var insts []int32
			for _, n := range nodes {
				v := n.c.View()
				insts = append(insts, v.Instance)
				for k := range v.Claims {
					its = append(its, Item{Key: k.String(), Owner: v.Instance, Weight: w[k]})
				}
			}
			return withinBound(its, insts, limit)
		}
	}
	waitFor(t, "work within 1.25 x the mean", balanced(1.25), nodes...)

	// The work of one instance's clusters grows tenfold: the drift check
	// rebalances.
	mu.Lock()
	for k := range nodes[0].c.View().Claims {
		weights[k] *= 10
	}
	mu.Unlock()
	if soon {
		for _, n := range nodes {
			n.c.WeightsChanged()
		}
	}
	waitFor(t, "work within 1.25 x the mean after drifting", balanced(1.25), nodes...)
	agrees(t, db, nodes...)
	var rebalances float64
	for _, n := range nodes {
		rebalances += testutilValue(t, n.c.m.Rebalances)
	}
	if rebalances < 1 {
		t.Errorf("rebalances metric %v", rebalances)
	}
}

func TestStaticRestrictions(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	const local = "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1"
	const cloud = "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0"
	general := cluster.Key{Kind: cluster.KindAlloc, Facility: local, Alloc: "00000000-0000-0000-0000-000000000000"}
	desktop := cluster.Key{Kind: cluster.KindAlloc, Facility: local, Alloc: "00000000-0000-0000-0000-000000000001"}
	var cloudGeneral cluster.Key
	if err := db.Pool.QueryRow(context.Background(), "SELECT pk_alloc FROM alloc WHERE pk_facility = $1 AND str_tag = 'general'",
		cloud).Scan(&cloudGeneral.Alloc); err != nil {
		t.Fatal(err)
	}
	cloudGeneral.Kind, cloudGeneral.Facility = cluster.KindAlloc, cloud
	pool1 := cluster.Key{Kind: cluster.KindTags, Facility: local, Bucket: cluster.Bucket("pool1", 16)}
	other := cluster.Key{Kind: cluster.KindTags, Facility: local, Bucket: (pool1.Bucket + 1) % 16}
	keys := []cluster.Key{general, desktop, cloudGeneral, pool1, other}

	generalShows := Static{Facility: "local", AllocTags: []config.AllocTag{{Show: "a", Tag: "general"}, {Show: "b", Tag: "general"}}}
	a := startNode(t, db, "a", Options{Static: generalShows})
	b := startNode(t, db, "b", Options{Static: generalShows})
	m := startNode(t, db, "m", Options{Static: Static{ManualTags: []string{"POOL1"}}})
	nodes := []*node{a, b, m}
	for _, n := range nodes {
		n.c.SetClusters(keys)
	}
	waitFor(t, "the restricted clusters owned and every cluster known", func() bool {
		for _, n := range nodes {
			if n.c.View().Clusters != len(keys) {
				return false
			}
		}
		return ownedOnce([]cluster.Key{general, pool1}, nodes...)
	}, nodes...)
	if _, ok := m.c.View().Claims[pool1]; !ok {
		t.Error("the manual-tag instance does not own its bucket")
	}
	rows := owners(t, db)
	for _, k := range []cluster.Key{desktop, cloudGeneral, other} {
		if r := rows[k.String()]; r.Owner != 0 {
			t.Errorf("%s is owned by %d though no instance may own it", k, r.Owner)
		}
	}
	for _, tc := range []struct {
		n    *node
		key  cluster.Key
		show string
		want bool
	}{{a, general, "a", true}, {a, general, "c", false}, {m, pool1, "c", true}} {
		if got := tc.n.c.AllowsShow(tc.key, tc.show); got != tc.want {
			t.Errorf("%s AllowsShow(%s, %s) = %v", tc.n.name, tc.key, tc.show, got)
		}
	}
	if a.c.MayOwn(desktop) || !a.c.MayOwn(general) || m.c.MayOwn(general) || !m.c.MayOwn(pool1) {
		t.Error("MayOwn disagrees with the restrictions")
	}

	// A later instance that would split the general cluster is refused.
	for _, bad := range []Options{
		{Static: Static{Facility: "local", AllocTags: []config.AllocTag{{Show: "c", Tag: "general"}}}},
		{}, // unrestricted: it would book every show there
		{Static: Static{Facility: "nowhere"}},
	} {
		err := runRefused(t, db, "late", bad, fmt.Sprintf("a conflicting instance (%+v)", bad.Static))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("a conflicting instance (%+v) ended with %v", bad.Static, err)
		}
	}
	// The same name as a live instance is refused too.
	err := runRefused(t, db, "a", Options{Static: generalShows}, "a second instance named a")
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "instance" {
		t.Errorf("a second instance named a ended with %v", err)
	}
}

// runRefused starts a node that must be refused at once (what names it in
// the failure) and returns the error its Run ended with.
func runRefused(t *testing.T, db *pgtest.DB, name string, opts Options, what string) error {
	t.Helper()
	n := startNode(t, db, name, opts)
	select {
	case err := <-n.done:
		n.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not refused", what)
		return nil
	}
}

// TestDatabaseRestart restarts the package's cluster, which every test's
// database lives in: it is not parallel, so it runs alone.
func TestDatabaseRestart(t *testing.T) {
	db := pgtest.NewDB(t)
	keys := tagKeys(6)
	nodes := startNodes(t, db, 2, Options{}, keys)
	ids := map[int32]bool{}
	for _, n := range nodes {
		ids[n.c.View().Instance] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.Cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every cluster owned again after the restart", func() bool {
		for _, n := range nodes {
			if ids[n.c.View().Instance] {
				return false
			}
		}
		return ownedOnce(keys, nodes...) && leaders(nodes...) == 1
	}, nodes...)
	db.Pool.Reset()
	agrees(t, db, nodes...)
}
