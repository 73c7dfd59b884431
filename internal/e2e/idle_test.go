package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// An instance with nothing to do runs no statement that reads work and at
// most one coordination statement per second (DESIGN.md, contract 3),
// counted per instance by statement logging with the application name in
// the log line prefix. The test's database alone logs every statement
// (ALTER DATABASE ... SET log_statement), so other tests of the package run
// as before. 10 s in the default suite, 60 s with CUESCHED_BENCH=1.
func TestIdleCost(t *testing.T) {
	window := 10 * time.Second
	if benchOn() {
		window = 60 * time.Second
	}
	t.Parallel()
	db := ownDB(t)
	exec1(t, db.Pool, fmt.Sprintf(`ALTER DATABASE %s SET log_statement = 'all'`, db.Name))
	farm := seed.Stress(3, 60, 4)
	total := int64(farm.FrameCount())
	if _, err := seed.Load(t.Context(), db.Pool, farm, 3); err != nil {
		t.Fatal(err)
	}
	inst := startInstance(t, db, "idle")
	waitFor(t, time.Minute, "every frame booked", func() bool {
		return count(t, db.Pool, `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`) == total
	}, inst)
	// Idle from here: the queue holds no layer once the loop has seen the
	// last ones drained.
	addr := inst.metricsAddr(t)
	waitFor(t, time.Minute, "the queue empty", func() bool { return queuedLayers(t, addr) == 0 }, inst)
	// The last bookings' stream hints (a layer drained) may still be on their
	// way under load: idle means the instance has applied the WAL written so
	// far, and its queue is empty after that. Its slot's confirmed position
	// is what it reports applied (every 10 s; an idle stream advances on the
	// walsender's keepalives). cuesched.instance.applied_lsn is not: the
	// status publisher rewrites it only when something it shows changed,
	// and a lag that stayed small changes nothing (the test waited for it
	// in vain once, under load).
	caughtUp(t, db.Pool, inst)
	waitFor(t, time.Minute, "the queue empty", func() bool { return queuedLayers(t, addr) == 0 }, inst)

	start := logSize(t, db.Cluster.LogPath)
	// The same capture must see the instance's statements while it booked,
	// or an empty count below would prove nothing.
	before := statementsSince(t, db.Cluster.LogPath, 0, inst.app)
	if !slices.ContainsFunc(before, readsWork) {
		t.Fatalf("the server log shows none of the instance's reads while it booked (%d statements)", len(before))
	}
	began := time.Now()
	<-time.After(window) // the measurement window itself, not a wait for an event
	elapsed := time.Since(began)
	stmts := statementsSince(t, db.Cluster.LogPath, start, inst.app)

	var work, coord []string
	for _, s := range stmts {
		if readsWork(s) {
			work = append(work, s)
		} else {
			coord = append(coord, s)
		}
	}
	perSecond := float64(len(coord)) / elapsed.Seconds()
	t.Logf("idle for %s: %d statements (%.2f/s), %d read work; distinct: %s", elapsed.Round(time.Millisecond),
		len(stmts), perSecond, len(work), distinct(stmts))
	if len(work) > 0 {
		t.Errorf("the idle instance read work %d times: %s", len(work), distinct(work))
	}
	if limit := int(elapsed.Seconds()) + 1; len(coord) > limit {
		t.Errorf("the idle instance ran %d coordination statements in %s, more than one a second",
			len(coord), elapsed.Round(time.Millisecond))
	}
	inst.stop(t)
	auditClean(t, db.Pool)
}

// caughtUp waits until inst has applied the WAL written so far: its slot's
// confirmed position, which it reports every 10 s (an idle stream advances
// on the walsender's keepalives).
func caughtUp(t *testing.T, pool *pgxpool.Pool, inst *instance) {
	t.Helper()
	var lsn string
	if err := pool.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the instance caught up with the WAL", func() bool {
		return count(t, pool, `SELECT count(*) FROM pg_replication_slots
			WHERE database = current_database() AND confirmed_flush_lsn >= $1::pg_lsn`, lsn) > 0
	}, inst)
}

// queuedLayers reads the instance's cuesched_queue_layers gauges (summed
// over clusters) from /metrics.
func queuedLayers(t *testing.T, addr string) float64 {
	t.Helper()
	return scrapeSum(t, addr, "cuesched_queue_layers")
}

// scrapeSum reads an instance's /metrics and sums every series of the
// metric name.
func scrapeSum(t *testing.T, addr, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range scrape(t, addr) {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// scrape reads an instance's /metrics: its sample lines, without comments.
func scrape(t *testing.T, addr string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	return lines
}

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	return st.Size()
}

// entryRE matches the first line of a server log entry, as pgcluster's
// log_line_prefix writes it ('%m [%p] app=%a ').
var entryRE = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] app=(\S*) ([A-Z]+):\s+(.*)$`)

// statementsSince returns the statements the server logged for sessions
// of application app after offset in the log: simple-protocol statements
// and extended-protocol executions, each with its continuation lines.
func statementsSince(t *testing.T, path string, offset int64, app string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatalf("server log: %v", err)
	}
	var out []string
	cur := -1 // index in out of the entry being continued; -1: not ours
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := entryRE.FindStringSubmatch(line)
		if m == nil {
			if cur >= 0 {
				out[cur] += " " + strings.TrimSpace(line)
			}
			continue
		}
		cur = -1
		if m[1] != app || m[2] != "LOG" {
			continue
		}
		msg := m[3]
		switch {
		case strings.HasPrefix(msg, "statement: "):
			msg = strings.TrimPrefix(msg, "statement: ")
		case strings.HasPrefix(msg, "execute "):
			_, msg, _ = strings.Cut(msg, ": ")
		default:
			continue
		}
		out = append(out, msg)
		cur = len(out) - 1
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("server log: %v", err)
	}
	return out
}

// workRE names the tables work is read from.
var workRE = regexp.MustCompile(`(?i)\b(frame|layer|layer_stat|layer_resource|job|job_stat|job_resource|show|folder|subscription|host|host_stat|proc)\b`)

// readsWork reports whether a statement reads Cuebot's tables (work, or the
// host state a poller would read) rather than cuesched's own coordination
// tables.
func readsWork(stmt string) bool { return workRE.MatchString(stmt) }

// distinct lists each statement once with its count, shortened.
func distinct(stmts []string) string {
	n := map[string]int{}
	for _, s := range stmts {
		s = strings.Join(strings.Fields(s), " ")
		if len(s) > 90 {
			s = s[:90] + "..."
		}
		n[s]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %dx %s", n[k], k)
	}
	return b.String()
}
