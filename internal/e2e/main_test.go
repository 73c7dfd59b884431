package e2e

import (
	"context"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// binary is the cuesched binary the tests run, built once in TestMain.
var binary string

// raceChildren: the instances the tests start run under the race detector
// only in `make chaos` (CUESCHED_CHAOS=1 with -race). In the default suite
// they run without it: under it an instance books several times slower, the
// instances' booking is most of this package's CPU, and the whole instance
// runs under the race detector in-process anyway (cmd/cuesched's run tests),
// as each part does in its own package's tests.
var raceChildren = raceEnabled && os.Getenv("CUESCHED_CHAOS") == "1"

// buildDir holds the binaries of this checkout: one folder per checkout, so
// two checkouts testing at once never run each other's build.
var buildDir string

// TestMain builds cuesched, then runs the tests on the package's throwaway
// PostgreSQL cluster. The binary goes to one fixed path per build mode
// (pgtest.Main exits the process, so nothing could remove a directory of
// its own afterwards); it is built under a temporary name and renamed into
// place, so runs at the same time never see half a file.
func TestMain(m *testing.M) {
	mode := "cuesched"
	args := []string{"build"}
	if raceChildren {
		mode += "-race"
		args = append(args, "-race")
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	buildDir = filepath.Join(os.TempDir(), "cuesched-e2e", fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(wd))))
	if binary, err = build(mode, args...); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	pgtest.Main(m, peerStress)
}

// peerStress is the template of the stress farm of seed 11 the tests book
// (seed.SuiteStress: the peer stress farm under make chaos and make bench,
// a quarter of it otherwise), seeded once for the process (pgtest.Fixture);
// peerStressKeys are its seeded keys.
var (
	peerStressKeys *seed.Seeded
	peerStressFarm = seed.SuiteStress(11)
	peerStress     = pgtest.Fixture{Name: pgtest.Template(fmt.Sprintf("tpl_stress_11_%d", len(peerStressFarm.Hosts))),
		Build: func(ctx context.Context, pool *pgxpool.Pool) error {
			s, err := seed.Load(ctx, pool, peerStressFarm, 11)
			peerStressKeys = s
			return err
		}}
)

// ownDB gives the test a PostgreSQL cluster of its own and a fresh database
// in it (of the template tpl, Full when none). Every test of the package
// creates replication slots, creating one waits for every open transaction
// of the cluster, and some tests stop instances mid-transaction: with a
// cluster each, no test waits for another's, so they run in parallel. A
// cluster is a copy of a frozen one (pgtest), not an initdb.
//
// Its hosts have just reported (freshPings): a template is seeded once per
// process, and a test cloning it minutes later would find every host past
// --host-ping-max-age, offered to no booking.
func ownDB(t *testing.T, tpl ...pgtest.Template) *pgtest.DB {
	t.Helper()
	db := pgtest.NewDBIn(t, pgtest.NewCluster(t, pgcluster.Options{}, tpl...), tpl...)
	freshPings(t, db.Pool)
	return db
}

// reportSQL is every UP host reporting now, as RQD does to Cuebot.
const reportSQL = `UPDATE host_stat SET ts_ping = current_timestamp WHERE str_state = 'UP'`

// freshPings is every UP host reporting now (reportSQL).
func freshPings(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), reportSQL); err != nil {
		t.Fatalf("hosts report: %v", err)
	}
}

// hostsReporting has every UP host report (freshPings) every reportInterval
// until the test ends, for a test that may outlive --host-ping-max-age (5
// minutes) on a loaded machine: without reports no host is offered after it
// and work waits beside idle hosts. (The fault world reports for its live
// RQDs only; the idle tests measure an instance with nothing written.)
func hostsReporting(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(reportInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := pool.Exec(rctx, reportSQL)
			rcancel()
			if err != nil && ctx.Err() == nil {
				t.Logf("hosts report: %v", err)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// peerStressDB is ownDB holding the stress farm of seed 11, the farm and
// the keys to launch more jobs with.
func peerStressDB(t *testing.T) (*pgtest.DB, *seed.Farm, *seed.Seeded) {
	t.Helper()
	db := ownDB(t, peerStress.Name)
	keys, err := peerStressKeys.On(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	return db, peerStressFarm, keys
}

// build builds cuesched with the go build arguments args into buildDir/name
// and returns its path. It builds under a temporary name and renames into
// place, so runs at the same time never see half a file.
func build(name string, args ...string) (string, error) {
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(buildDir, name)
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	cmd := exec.Command("go", append(args, "-o", tmp, "github.com/cuesched/cuesched/cmd/cuesched")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build cuesched: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}
