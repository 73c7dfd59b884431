package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/cuebotdb"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/migrations"
)

// Every cluster starts from a copy of a frozen one (pgcluster.Freeze):
//
//   - the base holds the Full, Cuebot and Empty templates. It is built once
//     per machine and kept under os.TempDir()/cuesched-pgtest, named by a
//     digest of what went into it (the server binaries, the Cuebot schema,
//     the migrations), so every test process of `make test` after the first
//     copies it instead of running initdb and building the schema;
//   - the prototype is the base with the process's fixtures (Main) built in,
//     on first use; clusters for tests of fixtures copy it, the others the
//     base. It is the process's own and removed when the tests end.

// baseTemplates are the templates the base holds.
var baseTemplates = []Template{Full, Cuebot, Empty}

// frozenSettings keep a frozen cluster small to copy: a shutdown checkpoint
// leaves two WAL segments, not PostgreSQL's default of five.
var frozenSettings = map[string]string{"min_wal_size": "32MB"}

var proto struct {
	mu      sync.Mutex
	base    string // the base's data directory
	baseOwn bool   // base is the process's own, not the machine's
	baseErr error
	fix     string // the prototype's, when the process has fixtures
	fixErr  error
}

// start starts a cluster from a copy of the base, or of the prototype when
// withFixtures (fixtures are a copy's weight to every test that uses none).
func start(ctx context.Context, opts pgcluster.Options, withFixtures bool) (*pgcluster.Cluster, error) {
	dir, built, err := frozen(ctx, withFixtures && len(fixtures) > 0)
	if err != nil {
		return nil, err
	}
	opts.From = dir
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	markBuilt(c, built...)
	return c, nil
}

func markBuilt(c *pgcluster.Cluster, ts ...Template) {
	tmplMu.Lock()
	defer tmplMu.Unlock()
	for _, t := range ts {
		templates[clusterTemplate{c, t}] = true
	}
}

// frozen returns the data directory of the base, or of the prototype when
// withFixtures, making each on first use, and the templates it holds.
func frozen(ctx context.Context, withFixtures bool) (string, []Template, error) {
	proto.mu.Lock()
	defer proto.mu.Unlock()
	if proto.base == "" && proto.baseErr == nil {
		var shared bool
		proto.base, shared, proto.baseErr = baseDir(ctx)
		proto.baseOwn = !shared
	}
	if proto.baseErr != nil || !withFixtures {
		return proto.base, baseTemplates, proto.baseErr
	}
	if proto.fix == "" && proto.fixErr == nil {
		proto.fix, proto.fixErr = buildFixtures(ctx, proto.base)
	}
	built := append([]Template{}, baseTemplates...)
	for name := range fixtures {
		built = append(built, name)
	}
	return proto.fix, built, proto.fixErr
}

// buildFixtures builds the fixtures in a copy of the base and freezes it.
func buildFixtures(ctx context.Context, base string) (string, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: frozenSettings, From: base})
	if err != nil {
		return "", err
	}
	markBuilt(c, baseTemplates...)
	for name := range fixtures {
		if err = ensureTemplate(ctx, c, name); err != nil {
			break
		}
	}
	return freeze(ctx, c, err)
}

// freeze freezes c unless building in it failed (err), and stops and
// removes it then.
func freeze(ctx context.Context, c *pgcluster.Cluster, err error) (string, error) {
	if err == nil {
		err = c.Freeze(ctx)
	}
	if err != nil {
		if stopErr := c.Stop(); stopErr != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stop prototype cluster:", stopErr)
		}
		return "", fmt.Errorf("prototype cluster: %w", err)
	}
	return c.Dir, nil
}

func removePrototype() {
	proto.mu.Lock()
	defer proto.mu.Unlock()
	dirs := []string{proto.fix}
	if proto.baseOwn {
		dirs = append(dirs, proto.base)
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: remove frozen cluster:", err)
		}
	}
}

// baseDir returns the base's data directory: the machine's (shared), built
// under a file lock when it has none for the current digest, so one process
// builds and the others wait for it and copy; or, when that cache cannot be
// used (another user's, say), one built for this process alone.
func baseDir(ctx context.Context) (dir string, shared bool, err error) {
	key, err := baseKey()
	if err != nil {
		return "", false, err
	}
	root := filepath.Join(os.TempDir(), "cuesched-pgtest")
	dir = filepath.Join(root, key)
	unlock, err := lockFile(root, key+".lock")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v: building a base cluster for this process alone\n", err)
		dir, err = buildBase(ctx)
		return dir, false, err
	}
	defer unlock()
	// A base appears by rename once frozen: if the directory exists, it is
	// whole.
	if _, err := os.Stat(dir); err == nil {
		now := time.Now()
		_ = os.Chtimes(dir, now, now) // marks it in use for prune
		return dir, true, nil
	}
	built, err := buildBase(ctx)
	if err != nil {
		return "", false, err
	}
	if err := os.Rename(built, dir); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: keep base cluster: %v\n", err)
		return built, false, nil
	}
	prune(root, key)
	return dir, true, nil
}

// buildBase builds a cluster with the base's templates and freezes it.
func buildBase(ctx context.Context) (string, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: frozenSettings})
	if err != nil {
		return "", err
	}
	for _, t := range baseTemplates {
		if err = ensureTemplate(ctx, c, t); err != nil {
			err = fmt.Errorf("build template %s: %w", t, err)
			break
		}
	}
	return freeze(ctx, c, err)
}

// baseKey is the digest naming the base: what changes the clusters it holds.
func baseKey() (string, error) {
	bin, err := pgcluster.BinDir()
	if err != nil {
		return "", err
	}
	st, err := os.Stat(filepath.Join(bin, "postgres"))
	if err != nil {
		return "", fmt.Errorf("base cluster: %w", err)
	}
	mig, err := migrations.Digest()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	// Bump the first line when the way the base is built changes.
	fmt.Fprintf(h, "pgtest base 1\n%s %d %d\n%s\n%s\n", bin, st.Size(), st.ModTime().UnixNano(),
		cuebotdb.Digest(), mig)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// prune removes the bases of other digests (older schemas) that no process
// has used for a day, with their lock files.
func prune(root, keep string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".lock")
		if name == keep {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// lockFile takes an exclusive lock on file name in dir (both created if
// missing), waiting for another process holding it, and returns its release.
func lockFile(dir, name string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("base cluster cache: %w", err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("base cluster lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("base cluster lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
