// Package pgtest gives every test its own fresh database on one throwaway
// PostgreSQL cluster per test package.
//
// A package that uses it declares
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test calls NewDB. The cluster starts on first use (packages whose
// selected tests need no database start none) and is removed when the
// package's tests end. Each database is a clone of a template holding the
// Cuebot-compatible schema and cuesched's migrations, so a test pays a file
// copy, not a schema build.
//
// Clusters are not bootstrapped either: the package's cluster and every
// cluster of a test's own (NewCluster) start from a copy of a frozen one
// whose templates are built (prototype.go), made once per machine for a
// given schema and reused by every test process after it.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/cuebotdb"
	"github.com/cuesched/cuesched/internal/testworld/leaktest"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/migrations"
)

// Template names a kind of fresh database.
type Template string

const (
	// Full is the Cuebot-compatible schema with cuesched's migrations applied.
	Full Template = "tpl_full"
	// Cuebot is the Cuebot-compatible schema alone, as a site has it before
	// `cuesched migrate up`.
	Cuebot Template = "tpl_cuebot"
	// Empty is a database with no Cuebot schema at all (someone else's
	// database, or the wrong one).
	Empty Template = "tpl_empty"
)

var (
	mu        sync.Mutex
	cluster   *pgcluster.Cluster
	startErr  error
	templates = map[clusterTemplate]bool{}
	dbSeq     atomic.Int64
	// fixtures are the templates Main was given, by name.
	fixtures = map[Template]Fixture{}
)

// A Fixture is a template database: the Full template with what Build
// writes into it (a seeded farm, say). It is built once per test process, on
// first use, in the prototype that the package's cluster and the clusters
// NewCluster is asked for it in start from; NewDB(tb, fixture.Name) clones it.
type Fixture struct {
	Name  Template
	Build func(ctx context.Context, pool *pgxpool.Pool) error
}

// Main runs the package's tests with the fixtures fx, fails them if they
// left goroutines behind (leaktest), then stops the cluster if one started
// and removes the process's frozen clusters.
func Main(m *testing.M, fx ...Fixture) {
	for _, f := range fx {
		fixtures[f.Name] = f
	}
	code := leaktest.Check(m.Run())
	mu.Lock()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stop cluster:", err)
		}
	}
	mu.Unlock()
	removePrototype()
	os.Exit(code)
}

// Cluster returns the package's cluster, starting it on first use.
func Cluster(tb testing.TB) *pgcluster.Cluster {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if cluster == nil && startErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cluster, startErr = start(ctx, pgcluster.Options{}, true)
	}
	if startErr != nil {
		tb.Fatalf("pgtest: %v", startErr)
	}
	return cluster
}

// clusterTemplate is a template built in one cluster.
type clusterTemplate struct {
	c *pgcluster.Cluster
	t Template
}

// NewCluster starts a cluster of the test's own with opts (a wal_level below
// logical, say) and stops it when the test ends. NewDBIn creates databases
// in it. Name among tpl the fixtures they will be of: only then does it start
// from the prototype, whose fixtures are dead weight to copy otherwise.
func NewCluster(tb testing.TB, opts pgcluster.Options, tpl ...Template) *pgcluster.Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	withFixtures := false
	for _, t := range tpl {
		_, isFixture := fixtures[t]
		withFixtures = withFixtures || isFixture
	}
	c, err := start(ctx, opts, withFixtures)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Logf("pgtest: stop cluster: %v", err)
		}
	})
	return c
}

// DB is one test's database.
type DB struct {
	Name string
	DSN  string
	URL  string
	Pool *pgxpool.Pool
	// Cluster is the cluster the database lives in (to restart it, or to open
	// replication connections).
	Cluster *pgcluster.Cluster
}

// NewDB creates a fresh database from the Full template (or the one given)
// and drops it when the test ends.
func NewDB(tb testing.TB, tpl ...Template) *DB {
	tb.Helper()
	return NewDBIn(tb, Cluster(tb), tpl...)
}

// NewDBIn is NewDB in cluster c (NewCluster).
func NewDBIn(tb testing.TB, c *pgcluster.Cluster, tpl ...Template) *DB {
	tb.Helper()
	t := Full
	if len(tpl) > 0 {
		t = tpl[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ensureTemplate(ctx, c, t); err != nil {
		tb.Fatalf("pgtest: build template %s: %v", t, err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := exec(ctx, c, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, t)); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	db := &DB{Name: name, DSN: c.DSN(name), URL: c.URL(name), Cluster: c}
	pool, err := pgxpool.New(ctx, db.DSN)
	if err != nil {
		tb.Fatalf("pgtest: connect %s: %v", name, err)
	}
	db.Pool = pool
	tb.Cleanup(func() {
		pool.Close()
		if !c.Running() {
			return // a cluster the test stopped (a failed-over primary) has nothing to drop
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// A replication session still streaming from the database (a test
		// that failed before stopping its consumer) keeps it from being
		// dropped: end those sessions, which drops their temporary slots.
		if err := exec(ctx, c, fmt.Sprintf(`SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots
			WHERE database = '%s' AND active_pid IS NOT NULL`, name)); err != nil {
			tb.Logf("pgtest: %v", err)
		}
		if err := exec(ctx, c, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			tb.Logf("pgtest: %v", err)
		}
	})
	return db
}

// tmplMu guards templates and serialises template builds.
var tmplMu sync.Mutex

func ensureTemplate(ctx context.Context, c *pgcluster.Cluster, t Template) error {
	tmplMu.Lock()
	defer tmplMu.Unlock()
	return ensureTemplateLocked(ctx, c, t)
}

func ensureTemplateLocked(ctx context.Context, c *pgcluster.Cluster, t Template) error {
	if templates[clusterTemplate{c, t}] {
		return nil
	}
	if f, ok := fixtures[t]; ok {
		if err := buildFixture(ctx, c, f); err != nil {
			return err
		}
		templates[clusterTemplate{c, t}] = true
		return nil
	}
	if err := exec(ctx, c, "CREATE DATABASE "+string(t)); err != nil {
		return err
	}
	if t != Empty {
		conn, err := pgx.Connect(ctx, c.DSN(string(t)))
		if err != nil {
			return fmt.Errorf("connect %s: %w", t, err)
		}
		err = cuebotdb.Create(ctx, conn)
		conn.Close(ctx)
		if err != nil {
			return err
		}
	}
	if t == Full {
		if err := migrations.Up(ctx, c.URL(string(t))); err != nil {
			return err
		}
	}
	// Templates must have no sessions when cloned; the migrate driver's pool
	// is closed by now, and marking the database a template documents intent.
	if err := exec(ctx, c, fmt.Sprintf("ALTER DATABASE %s WITH IS_TEMPLATE true", t)); err != nil {
		return err
	}
	templates[clusterTemplate{c, t}] = true
	return nil
}

// buildFixture builds f as a clone of the Full template that f.Build fills,
// and marks it a template. The caller holds tmplMu.
func buildFixture(ctx context.Context, c *pgcluster.Cluster, f Fixture) error {
	if err := ensureTemplateLocked(ctx, c, Full); err != nil {
		return err
	}
	if err := exec(ctx, c, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", f.Name, Full)); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, c.DSN(string(f.Name)))
	if err != nil {
		return fmt.Errorf("connect %s: %w", f.Name, err)
	}
	err = f.Build(ctx, pool)
	if err == nil {
		// A clone copies the planner's statistics but starts with no
		// activity counted, so autovacuum would not analyze it as it does a
		// database just seeded: analyze here, and clones plan as a seeded
		// database does once autovacuum has seen it.
		_, err = pool.Exec(ctx, "ANALYZE")
	}
	pool.Close()
	if err != nil {
		return fmt.Errorf("fixture %s: %w", f.Name, err)
	}
	return exec(ctx, c, fmt.Sprintf("ALTER DATABASE %s WITH IS_TEMPLATE true", f.Name))
}

// exec runs one statement on the cluster's postgres database. CREATE and DROP
// DATABASE are serialised: two clones of one template at once can fail with
// "source database is being accessed by other users".
var createMu sync.Mutex

func exec(ctx context.Context, c *pgcluster.Cluster, sql string) error {
	createMu.Lock()
	defer createMu.Unlock()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", c.Dir, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// NewRole creates a role named prefix_<database> with sql, a format whose
// %[1]s is the role's name, and drops it (with what it owns and the grants it
// holds in this database) when the test ends. Roles belong to the cluster, so
// the name carries the database's to stay apart from other tests'.
func (db *DB) NewRole(tb testing.TB, prefix, sql string) string {
	tb.Helper()
	ctx := context.Background()
	role := prefix + "_" + db.Name
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(sql, role)); err != nil {
		tb.Fatalf("pgtest: create role %s: %v", role, err)
	}
	tb.Cleanup(func() {
		if _, err := db.Pool.Exec(ctx, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = $1",
			role); err != nil {
			tb.Logf("pgtest: end sessions of %s: %v", role, err)
		}
		if _, err := db.Pool.Exec(ctx, fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE IF EXISTS %[1]s", role)); err != nil {
			tb.Logf("pgtest: drop role %s: %v", role, err)
		}
	})
	return role
}

// PlainRole creates (once per cluster) a login role named name that is
// neither superuser nor allowed to replicate, with read and write access to
// every table, as a site may give cuesched beside a server without logical
// replication, and returns db's DSN for it.
func PlainRole(tb testing.TB, db *DB, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := pgx.Identifier{name}.Sanitize()
	lit := "'" + strings.ReplaceAll(name, "'", "''") + "'"
	if err := exec(ctx, db.Cluster, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = `+lit+`) THEN
			CREATE ROLE `+id+` LOGIN NOSUPERUSER NOREPLICATION;
			GRANT pg_read_all_data, pg_write_all_data TO `+id+`;
		END IF;
	END $$`); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return strings.Replace(db.DSN, "user=postgres", "user="+name, 1)
}
