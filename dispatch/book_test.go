package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/match"
)

var testCluster = Cluster{ID: 7, Key: cluster.Key{Kind: cluster.KindAlloc, Facility: "local", Alloc: "gen"}}

// Booking writes DESIGN.md's write set: frames RUNNING on the host at the
// next version, one proc each, host idle lowered, counters raised, and one
// pending outbox row per booking.
func TestBookWritesTheWriteSet(t *testing.T) {
	t.Parallel()
	db, ctx, ps := placedFarm(t, booktest.SmallFarm(2, 800, 1, 2, 3, 200), 6)
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != 6 || len(res.Dropped) != 0 || res.Busy || res.LSN == 0 {
		t.Fatalf("booked %d dropped %v busy %v lsn %v", len(res.Booked), res.Dropped, res.Busy, res.LSN)
	}
	for _, bk := range res.Booked {
		var state, host string
		var version, cores int32
		var procCores, memUsed int64
		var outState string
		var outVersion, outCluster int32
		if err := db.Pool.QueryRow(ctx, `SELECT f.str_state, f.str_host, f.int_version, f.int_cores,
				p.int_cores_reserved, p.int_mem_used, o.state, o.frame_version, o.cluster_id
			FROM frame f JOIN proc p ON p.pk_frame = f.pk_frame JOIN cuesched.launch_outbox o ON o.proc_id = p.pk_proc
			WHERE f.pk_frame = $1 AND p.pk_proc = $2`, bk.Frame.ID, bk.ProcID).
			Scan(&state, &host, &version, &cores, &procCores, &memUsed, &outState, &outVersion, &outCluster); err != nil {
			t.Fatalf("frame %s: %v", bk.Frame.ID, err)
		}
		if state != "RUNNING" || host != bk.Host.Name || version != bk.Frame.Version+1 || version != bk.Version ||
			int64(cores) != bk.Size.Cores || procCores != bk.Size.Cores || memUsed != 262144 ||
			outState != "pending" || outVersion != version || outCluster != testCluster.ID {
			t.Errorf("frame %s: %s on %s v%d cores %d proc %d mem used %d outbox %s v%d cluster %d", bk.Frame.Name,
				state, host, version, cores, procCores, memUsed, outState, outVersion, outCluster)
		}
		if bk.EligibleAt.IsZero() || bk.CommitAt.Before(bk.EligibleAt) || bk.ShowName != "film" {
			t.Errorf("booking %+v", bk)
		}
	}
	if got := counterValue(t, b.sched.FramesDispatched.WithLabelValues("film")); got != 6 {
		t.Errorf("frames dispatched %v", got)
	}
	if got := histogramCount(t, b.sched.TimeToBook); got != 6 {
		t.Errorf("time to book observed %d times", got)
	}
	audittest.Clean(t, db.Pool)
}

// A host whose idle cores a Cuebot-style booking took between matching and
// commit loses exactly the placements that no longer fit; the rest book.
func TestBookLosesWhatCuebotTook(t *testing.T) {
	t.Parallel()
	f := booktest.SmallFarm(1, 800, 1, 1, 4, 200)
	f.Shows = append(f.Shows, seed.Show{Name: "legacy", Subscriptions: []seed.Subscription{{Alloc: "local.gen", Size: 1000, Burst: 1000}}})
	f.Jobs = append(f.Jobs, seed.Job{Name: "legacy-job", Show: "legacy", Layers: []seed.Layer{{Name: "l", Frames: 1, Cores: 300, Mem: seed.GB, Tags: "gen"}}})
	db := booktest.LoadFarm(t, f)
	ctx := ctxFor(t, time.Minute)
	v := booktest.ReadView(ctx, t, db.Pool)
	var film []*match.Layer
	for _, l := range v.Layers {
		if l.JobName != "legacy-job" {
			film = append(film, l)
		}
	}
	v.Layers = film
	ps := booktest.FirstFit(v, nil) // four 2-core frames on the 8-core host
	if len(ps) != 4 {
		t.Fatalf("%d placements", len(ps))
	}
	// Cuebot books 3 cores of an unmanaged show on the same host: 5 remain.
	sim := &cuebotsim.Sim{Pool: db.Pool}
	legacy := db.Seeded.Jobs["legacy-job"].Frames["0001-l"]
	if _, err := sim.Book(ctx, legacy, ps[0].Host.ID, 300, seed.GB, 0, 0); err != nil {
		t.Fatal(err)
	}
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != 2 || len(res.Dropped) != 2 {
		t.Fatalf("booked %d, dropped %v", len(res.Booked), res.Dropped)
	}
	for i, d := range res.Dropped {
		if d.Reason != DropHostCapacity || d.Placement.Frame.ID != ps[2+i].Frame.ID {
			t.Errorf("drop %d: %+v", i, d)
		}
	}
	if got := counterValue(t, b.m.drops.WithLabelValues(string(DropHostCapacity))); got != 2 {
		t.Errorf("drops metric %v", got)
	}
	var idle int64
	if err := db.Pool.QueryRow(ctx, `SELECT int_cores_idle FROM host WHERE pk_host = $1`, ps[0].Host.ID).Scan(&idle); err != nil {
		t.Fatal(err)
	}
	if idle != 100 {
		t.Errorf("idle cores %d, want 100", idle)
	}
	audittest.Clean(t, db.Pool, audit.Options{AllowUnmanaged: true})
}

// Whatever changed between matching and commit, the booking commits nothing
// that breaks it, and says why.
func TestBookRechecksChanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		farm   func(*seed.Farm)
		change string // SQL run between matching and booking; :host, :job, :layer, :frame name the first placement's
		booked int
		reason DropReason
	}{
		{name: "job paused", change: `UPDATE job SET b_paused = true WHERE pk_job = ':job'`, reason: DropJobPaused},
		{name: "job finished", change: `UPDATE job SET str_state = 'FINISHED' WHERE pk_job = ':job'`, reason: DropJobNotPending},
		{name: "host locked", change: `UPDATE host SET str_lock_state = 'LOCKED' WHERE pk_host = ':host'`, reason: DropHostLocked},
		{name: "host nimby", change: `UPDATE host SET str_lock_state = 'NIMBY_LOCKED' WHERE pk_host = ':host'`, reason: DropHostLocked},
		{name: "host down", change: `UPDATE host_stat SET str_state = 'DOWN' WHERE pk_host = ':host'`, reason: DropHostDown},
		{name: "burst lowered", change: `UPDATE subscription SET int_burst = 300`, booked: 1, reason: DropBurst},
		{name: "burst zero", change: `UPDATE subscription SET int_burst = 0`, reason: DropBurst},
		{name: "job max lowered", change: `UPDATE job_resource SET int_max_cores = 500 WHERE pk_job = ':job'`, booked: 2, reason: DropJobCap},
		{name: "folder max lowered", change: `UPDATE folder_resource SET int_max_cores = 200
			WHERE pk_folder = (SELECT pk_folder FROM job WHERE pk_job = ':job')`, booked: 1, reason: DropFolderCap},
		{name: "limit reached", farm: func(f *seed.Farm) {
			f.Limits = []seed.Limit{{Name: "lic", Max: 2}}
			f.Jobs[0].Layers[0].Limits = []string{"lic"}
		}, change: `UPDATE limit_record SET int_max_value = 3`, booked: 3, reason: DropLimit},
		{name: "start after", change: `UPDATE layer SET ts_start_after = current_timestamp + interval '1 hour' WHERE pk_layer = ':layer'`,
			reason: DropStartAfter},
		{name: "show unmanaged", change: `UPDATE show SET b_scheduler_managed = false`, reason: DropShowUnmanaged},
		{name: "show inactive", change: `UPDATE show SET b_active = false`, reason: DropShowUnmanaged},
		{name: "frame retried", change: `UPDATE frame SET int_version = int_version + 1 WHERE pk_frame = ':frame'`, booked: 3,
			reason: DropFrameChanged},
		{name: "frame eaten", change: `UPDATE frame SET str_state = 'EATEN' WHERE pk_frame = ':frame'`, booked: 3,
			reason: DropFrameChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := booktest.SmallFarm(1, 1600, 1, 1, 4, 200)
			if tc.farm != nil {
				tc.farm(f)
			}
			db := booktest.LoadFarm(t, f)
			ctx := ctxFor(t, time.Minute)
			ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
			if len(ps) != 4 {
				t.Fatalf("%d placements", len(ps))
			}
			p := ps[0]
			change := strings.NewReplacer(":host", p.Host.ID, ":job", p.Layer.JobID, ":layer", p.Layer.ID, ":frame", p.Frame.ID).
				Replace(tc.change)
			if _, err := db.Pool.Exec(ctx, change); err != nil {
				t.Fatal(err)
			}
			b := newTestBooker(db.Pool, BookerConfig{})
			res, err := b.Book(ctx, testCluster, ps)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Booked) != tc.booked || len(res.Dropped) != 4-tc.booked {
				t.Fatalf("booked %d, dropped %v", len(res.Booked), res.Dropped)
			}
			for _, d := range res.Dropped {
				if d.Reason != tc.reason {
					t.Errorf("dropped %s for %s (%s), want %s", d.Placement.Frame.Name, d.Reason, d.Detail, tc.reason)
				}
			}
			audittest.Clean(t, db.Pool)
		})
	}
}

// A cluster another transaction is booking is skipped, not waited on.
func TestBookBusyCluster(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, 2, 100))
	ctx := ctxFor(t, time.Minute)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, cluster.BookingLock, testCluster.ID); err != nil {
		t.Fatal(err)
	}
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Busy || len(res.Deferred) != 2 || len(res.Booked) != 0 || res.LSN != 0 {
		t.Fatalf("%+v", res)
	}
	if got := counterValue(t, b.m.busy); got != 1 {
		t.Errorf("busy metric %v", got)
	}
	// Another cluster is not held up.
	res, err = b.Book(ctx, Cluster{ID: testCluster.ID + 1}, ps)
	if err != nil || len(res.Booked) != 2 {
		t.Fatalf("other cluster: %v %+v", err, res)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	audittest.Clean(t, db.Pool)
}

// A guard that still raises (a writer that slipped past the locks) rolls the
// batch back; it is retried once from fresh values, and dropped when it
// loses twice.
func TestBookGuardLossRetriedOnce(t *testing.T) {
	t.Parallel()
	for _, losses := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d losses", losses), func(t *testing.T) {
			db := booktest.LoadFarm(t, booktest.SmallFarm(2, 800, 1, 1, 4, 200))
			ctx := ctxFor(t, time.Minute)
			ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
			b := newTestBooker(db.Pool, BookerConfig{BatchMax: 8})
			attempts := 0
			b.hookBeforeWrite = func(ctx context.Context, tx *pgxpool.Conn, attempt int) error {
				attempts = attempt
				if attempt > losses {
					return nil
				}
				_, err := tx.Exec(ctx, `UPDATE host SET int_cores_idle = 100 WHERE pk_host = $1`, ps[0].Host.ID)
				return err
			}
			res, err := b.Book(ctx, testCluster, ps)
			if err != nil {
				t.Fatal(err)
			}
			if got := counterValue(t, b.m.guardLosses.WithLabelValues("guard")); got != float64(losses) {
				t.Errorf("guard losses %v", got)
			}
			if losses == 1 {
				if attempts != 2 || len(res.Booked) != 4 || len(res.Dropped) != 0 {
					t.Fatalf("attempts %d booked %d dropped %v", attempts, len(res.Booked), res.Dropped)
				}
				if b.BatchSize(testCluster.ID) != 8 {
					t.Errorf("batch size %d after a loss and a clean full commit", b.BatchSize(testCluster.ID))
				}
			} else {
				if len(res.Booked) != 0 || len(res.Dropped) != 4 || res.Dropped[0].Reason != DropGuard {
					t.Fatalf("booked %d dropped %v", len(res.Booked), res.Dropped)
				}
				if b.BatchSize(testCluster.ID) != 2 {
					t.Errorf("batch size %d after two losses", b.BatchSize(testCluster.ID))
				}
			}
			audittest.Clean(t, db.Pool)
		})
	}
}

// Long lists are booked in transactions of the batch size; dry runs write
// dry outbox rows and hand nothing to a launcher; a fenced cluster books
// nothing.
func TestBookBatchesDryRunAndFence(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(2, 1600, 1, 1, 7, 100))
	ctx := ctxFor(t, time.Minute)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)

	fenced := newTestBooker(db.Pool, BookerConfig{Fence: refusingFence{}})
	res, err := fenced.Book(ctx, testCluster, ps)
	if !errors.Is(err, ErrFenced) || len(res.Deferred) != 7 || len(res.Booked) != 0 {
		t.Fatalf("fenced: %v %+v", err, res)
	}

	l := &recordingLauncher{}
	b := newTestBooker(db.Pool, BookerConfig{BatchMax: 3, DryRun: true, Launcher: l})
	res, err = b.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != 7 {
		t.Fatalf("%+v", res)
	}
	if n := histogramCount(t, b.m.batchSize); n != 3 {
		t.Errorf("%d transactions, want 3", n)
	}
	var dry int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox WHERE state = 'dry'`).Scan(&dry); err != nil {
		t.Fatal(err)
	}
	if dry != 7 || len(l.submitted) != 0 {
		t.Errorf("%d dry rows, %d queued launches", dry, len(l.submitted))
	}
	audittest.Clean(t, db.Pool)
}

type refusingFence struct{}

func (refusingFence) Queue(b *pgx.Batch, clusterID int32) {
	b.Queue(`SELECT false`).QueryRow(func(r pgx.Row) error {
		var ok bool
		if err := r.Scan(&ok); err != nil {
			return err
		}
		return fmt.Errorf("cluster %d: %w", clusterID, ErrFenced)
	})
}

// A COMMIT cut off by a broken connection is resolved by asking the outbox:
// the batch committed exactly when its rows are there.
func TestBookCommitOutcome(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, 2, 100))
	ctx := ctxFor(t, time.Minute)
	b := newTestBooker(db.Pool, BookerConfig{})
	res, err := b.Book(ctx, testCluster, booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	broken := errors.New("connection reset by peer")
	committed := []keptPlacement{{procID: res.Booked[0].ProcID}, {procID: res.Booked[1].ProcID}}
	if err := b.commitOutcome(ctx, broken, committed); err != nil {
		t.Errorf("committed batch: %v", err)
	}
	lost := []keptPlacement{{procID: newUUID()}}
	if err := b.commitOutcome(ctx, broken, lost); err == nil || !errors.Is(err, broken) || errors.Is(err, ErrCommitUnknown) {
		t.Errorf("batch that did not commit: %v", err)
	}
	refused := &pgconn.PgError{Code: "40001", Message: "could not serialize"}
	if err := b.commitOutcome(ctx, refused, committed); err == nil {
		t.Error("a COMMIT the server refused rolled back")
	}
	closed, err := pgxpool.New(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if err := newTestBooker(closed, BookerConfig{}).commitOutcome(ctx, broken, committed); !errors.Is(err, ErrCommitUnknown) {
		t.Errorf("outbox unreadable: %v", err)
	}
	audittest.Clean(t, db.Pool)
}
