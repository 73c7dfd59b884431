package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
)

// recordBookings makes the database remember every booking: a trigger on
// the launch outbox (written in every booking transaction, --dry-run too)
// copies each row to e2e.booking with the booking session's
// application_name (which instance booked), the application_name of the
// cluster's owner as that transaction sees it, and the time. A booking
// proves its ownership by holding its cluster's row FOR SHARE, so in a
// fenced booking the two names agree; one that committed without owning
// its cluster shows another owner (or none). Rows stay when procs go.
func recordBookings(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	exec1(t, pool, `
		CREATE SCHEMA e2e;
		CREATE TABLE e2e.booking (
			proc_id    text        NOT NULL,
			frame_id   text        NOT NULL,
			version    integer     NOT NULL,
			host_id    text        NOT NULL,
			cluster_id integer     NOT NULL,
			app        text        NOT NULL,
			owner_app  text,
			at         timestamptz NOT NULL
		);
		-- SECURITY DEFINER: it records whatever role books (one made by
		-- cuesched grants has no right on schema e2e).
		CREATE FUNCTION e2e.record() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
		BEGIN
			INSERT INTO e2e.booking
			SELECT n.proc_id, n.frame_id, n.frame_version, n.host_id, n.cluster_id, current_setting('application_name'), i.app_name,
			       clock_timestamp()
			  FROM new_rows n
			  LEFT JOIN cuesched.cluster c ON c.id = n.cluster_id
			  LEFT JOIN cuesched.instance i ON i.id = c.owner;
			RETURN NULL;
		END $$;
		CREATE TRIGGER e2e_record AFTER INSERT ON cuesched.launch_outbox
			REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION e2e.record();`)
}

// checkBookings fails the test for every recorded booking made by an
// instance that did not own its cluster, and for every frame booked more
// than once from the same version (a retried frame is booked again, from
// the version its retry left).
func checkBookings(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT app, coalesce(owner_app, '(none)'), cluster_id, count(*), min(at), max(at)
		FROM e2e.booking WHERE owner_app IS DISTINCT FROM app GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`)
	if err != nil {
		t.Fatalf("read bookings: %v", err)
	}
	for rows.Next() {
		var app, owner string
		var clusterID int32
		var n int64
		var first, last time.Time
		if err := rows.Scan(&app, &owner, &clusterID, &n, &first, &last); err != nil {
			t.Fatalf("read bookings: %v", err)
		}
		t.Errorf("%s committed %d bookings in cluster %d owned by %s (from %s to %s)", app, n, clusterID, owner,
			first.Format("15:04:05.000"), last.Format("15:04:05.000"))
	}
	rows.Close()
	if n := count(t, pool, `SELECT count(*) FROM (SELECT frame_id, version FROM e2e.booking GROUP BY 1, 2 HAVING count(*) > 1) d`); n > 0 {
		t.Errorf("%d frames booked more than once from the same version", n)
	}
}

// clusterRow is a row of cuesched.cluster.
type clusterRow struct {
	ID    int32
	Key   string
	Owner int32 // 0: none
}

func readClusters(t *testing.T, pool *pgxpool.Pool) []clusterRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT id, key, coalesce(owner, 0) FROM cuesched.cluster ORDER BY id`)
	if err != nil {
		t.Fatalf("read clusters: %v", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[clusterRow])
	if err != nil {
		t.Fatalf("read clusters: %v", err)
	}
	return out
}

// keyer is the cluster.Keyer of the database's allocations and bucket count:
// the mapping every instance uses.
func keyer(t *testing.T, pool *pgxpool.Pool) *cluster.Keyer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT pk_alloc, pk_facility, coalesce(str_tag, '') FROM alloc`)
	if err != nil {
		t.Fatalf("read allocations: %v", err)
	}
	allocs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[cluster.Alloc])
	if err != nil {
		t.Fatalf("read allocations: %v", err)
	}
	buckets := count(t, pool, `SELECT value::int FROM cuesched.setting WHERE name = 'tag_buckets'`)
	return cluster.NewKeyer(allocs, int(buckets))
}

// expectedClusters is every cluster the hosts make (cluster.Key strings).
func expectedClusters(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	k := keyer(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT h.pk_host, a.pk_facility, h.pk_alloc,
			coalesce(array_agg(lower(t.str_tag)) FILTER (WHERE t.str_tag IS NOT NULL), '{}')
		FROM host h JOIN alloc a USING (pk_alloc) LEFT JOIN host_tag t ON t.pk_host = h.pk_host
		GROUP BY 1, 2, 3`)
	if err != nil {
		t.Fatalf("read hosts: %v", err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var host, facility, alloc string
		var tags []string
		if err := rows.Scan(&host, &facility, &alloc, &tags); err != nil {
			t.Fatalf("read hosts: %v", err)
		}
		for _, key := range k.OfHost(facility, alloc, tags) {
			seen[key.String()] = true
		}
	}
	rows.Close()
	out := make([]string, 0, len(seen))
	for key := range seen {
		out = append(out, key)
	}
	sort.Strings(out)
	return out
}

// pendingLayers counts, per cluster key, the layers the queue holds: layers
// with waiting frames of PENDING, unpaused jobs of active managed shows,
// each in every cluster its tags fall in. These are ownership's weights.
func pendingLayers(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	k := keyer(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT j.pk_facility, l.str_tags
		FROM layer l JOIN layer_stat ls USING (pk_layer) JOIN job j ON j.pk_job = l.pk_job
		JOIN show s ON s.pk_show = j.pk_show
		WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND NOT j.b_paused
		  AND s.b_scheduler_managed AND s.b_active`)
	if err != nil {
		t.Fatalf("read pending layers: %v", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var facility, tags string
		if err := rows.Scan(&facility, &tags); err != nil {
			t.Fatalf("read pending layers: %v", err)
		}
		for _, key := range k.OfLayer(facility, cluster.SplitLayerTags(tags)) {
			out[key.String()]++
		}
	}
	rows.Close()
	return out
}

// instanceIDs are the ids of the live registrations of the given instances.
func instanceIDs(t *testing.T, pool *pgxpool.Pool, insts ...*instance) map[int32]*instance {
	t.Helper()
	out := map[int32]*instance{}
	for _, i := range insts {
		if id := i.registration(t, pool); id != 0 {
			out[id] = i
		}
	}
	return out
}

// ownedOnce reports whether every cluster the hosts make has a row owned by
// one of insts, no other rows exist and no handover is under way.
func ownedOnce(t *testing.T, pool *pgxpool.Pool, insts ...*instance) (bool, string) {
	t.Helper()
	ids := instanceIDs(t, pool, insts...)
	if len(ids) != len(insts) {
		return false, fmt.Sprintf("%d of %d instances registered", len(ids), len(insts))
	}
	if n := count(t, pool, `SELECT count(*) FROM cuesched.handover`); n > 0 {
		return false, fmt.Sprintf("%d handovers under way", n)
	}
	want := expectedClusters(t, pool)
	var got []string
	for _, c := range readClusters(t, pool) {
		if ids[c.Owner] == nil {
			return false, fmt.Sprintf("cluster %s owned by %d", c.Key, c.Owner)
		}
		got = append(got, c.Key)
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		return false, fmt.Sprintf("clusters %v, want %v", got, want)
	}
	return true, ""
}

// loads is the pending work (pendingLayers) and the cluster count each of
// insts owns, by instance name.
func loads(t *testing.T, pool *pgxpool.Pool, insts ...*instance) (work, clusters map[string]int64) {
	t.Helper()
	ids := instanceIDs(t, pool, insts...)
	pending := pendingLayers(t, pool)
	work, clusters = map[string]int64{}, map[string]int64{}
	for _, i := range insts {
		work[i.name], clusters[i.name] = 0, 0
	}
	for _, c := range readClusters(t, pool) {
		if i := ids[c.Owner]; i != nil {
			work[i.name] += pending[c.Key]
			clusters[i.name]++
		}
	}
	return work, clusters
}

// auditClean waits for the counters of managed shows to come back to
// SUM(proc) (after a release they run high until the owner recomputes
// them), then runs the audit.
func auditClean(t *testing.T, pool *pgxpool.Pool, opts ...audit.Options) {
	t.Helper()
	var o audit.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	// The audit that ends the wait is the one reported: a release Cuebot
	// commits after it (its proc deleted, the counters left to cuesched a
	// moment longer) cannot slip between a settled audit and the verdict.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		vs, err := audit.Snapshot(ctx, pool, o)
		cancel()
		if err != nil {
			t.Fatalf("audit: %v", err)
		}
		// Left-legal findings (a show handed back while its frames run)
		// stay: they are no reason to wait. Counters off their sums are
		// waited for a while: the instances bring them back.
		ill := audit.Illegals(vs)
		if len(ill) == 0 || !onlyCounters(ill) || time.Now().After(deadline) {
			audittest.Report(t, vs)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func onlyCounters(vs []audit.Violation) bool {
	for _, v := range vs {
		if !strings.HasPrefix(v.Check, "counter-") {
			return false
		}
	}
	return true
}

// completer stands in for frames finishing: it releases RUNNING frames of
// managed shows, oldest first, with Cuebot's two release transactions, so
// capacity frees and booking goes on. It runs until stopped.
type completer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
	done   int64 // frames released
}

// releaseOptions shape a completer's load.
type releaseOptions struct {
	workers int
	// rate bounds the releases a second over all workers; 0: as fast as
	// they go.
	rate int
	// retries: of every four frames a worker releases, three are retried
	// (back to WAITING, to be booked again) and one succeeds; otherwise
	// every one succeeds.
	retries bool
}

// startCompleter completes frames with workers sessions, as fast as they go.
func startCompleter(t *testing.T, pool *pgxpool.Pool, workers int) *completer {
	return startReleases(t, pool, releaseOptions{workers: workers})
}

func startReleases(t *testing.T, pool *pgxpool.Pool, o releaseOptions) *completer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &completer{cancel: cancel}
	sim := &cuebotsim.Sim{Pool: pool}
	for w := range o.workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			var pace <-chan time.Time
			if o.rate > 0 {
				tick := time.NewTicker(time.Second * time.Duration(o.workers) / time.Duration(o.rate))
				defer tick.Stop()
				pace = tick.C
			}
			for i := 0; ctx.Err() == nil; {
				rows, err := pool.Query(ctx, `SELECT f.pk_frame FROM frame f JOIN job j USING (pk_job)
					JOIN show s ON s.pk_show = j.pk_show
					WHERE f.str_state = 'RUNNING' AND s.b_scheduler_managed AND (hashtext(f.pk_frame) & 2147483647) % $1 = $2
					ORDER BY f.ts_started LIMIT 20`, o.workers, w)
				var frames []string
				if err == nil {
					frames, err = pgx.CollectRows(rows, pgx.RowTo[string])
				}
				if err != nil {
					c.fail(ctx, err)
					return
				}
				if len(frames) == 0 {
					// Nothing runs yet: look again at the next booking.
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				for _, f := range frames {
					if pace != nil {
						select {
						case <-ctx.Done():
							return
						case <-pace:
						}
					}
					release := sim.Succeed
					if o.retries && i%4 != 3 {
						release = sim.Retry
					}
					i++
					err := release(ctx, f)
					if err != nil && !errors.Is(err, cuebotsim.ErrStale) && !errors.Is(err, pgx.ErrNoRows) {
						c.fail(ctx, err)
						return
					}
					if err == nil {
						c.mu.Lock()
						c.done++
						c.mu.Unlock()
					}
				}
			}
		}()
	}
	t.Cleanup(c.stop)
	return c
}

// released is how many frames have been released so far.
func (c *completer) released() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *completer) fail(ctx context.Context, err error) {
	if ctx.Err() != nil || isCtxErr(err) {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// stop ends the completer and returns its first error.
func (c *completer) stop() {
	c.cancel()
	c.wg.Wait()
}

func (c *completer) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("completing frames: %v", c.err)
	}
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// logWaiting logs what still waits, per layer tag, beside the largest idle
// capacity of the open hosts carrying that tag: for a failed test's reader.
func logWaiting(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `
		SELECT l.str_tags, count(*), min(l.int_cores_min), min(l.int_mem_min),
		       (SELECT max(h.int_cores_idle) FROM host h JOIN host_tag ht ON ht.pk_host = h.pk_host
		         WHERE lower(ht.str_tag) = lower(l.str_tags) AND h.str_lock_state = 'OPEN'),
		       (SELECT max(h.int_mem_idle) FROM host h JOIN host_tag ht ON ht.pk_host = h.pk_host
		         WHERE lower(ht.str_tag) = lower(l.str_tags) AND h.str_lock_state = 'OPEN')
		  FROM frame f JOIN layer l USING (pk_layer)
		 WHERE f.str_state = 'WAITING' GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Logf("read waiting frames: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var tags string
		var n, cores, mem int64
		var idleCores, idleMem *int64
		if err := rows.Scan(&tags, &n, &cores, &mem, &idleCores, &idleMem); err != nil {
			t.Logf("read waiting frames: %v", err)
			return
		}
		deref := func(p *int64) int64 {
			if p == nil {
				return -1
			}
			return *p
		}
		t.Logf("waiting: tag %q: %d frames (smallest %d cores, %d KB); its hosts' largest idle: %d cores, %d KB",
			tags, n, cores, mem, deref(idleCores), deref(idleMem))
	}
}
