package dispatch

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/booktest"
)

// A change Cuebot commits while a booking is under way (a job killed or
// paused, a host taken DOWN or locked, a burst lowered) is ordered against
// the booking by commit: either the booking committed first (the change
// waited for it) or the booking saw the change and booked nothing it
// forbids. Never a booking committed after the change that read the rows
// from before it: the booking reads what these changes write under a lock
// they wait for. The booking is held after its reads (another transaction
// holds the point row it locks last) while the change commits; the change's
// snapshot, taken after its write, must show every booking committed.
func TestBookOrderedAgainstCuebotChanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, change string }{
		{"job killed", `UPDATE job SET str_state = 'FINISHED', str_visible_name = NULL, ts_stopped = current_timestamp
			WHERE pk_job = ':job'`},
		{"job paused", `UPDATE job SET b_paused = true WHERE pk_job = ':job'`},
		{"host down", `UPDATE host_stat SET str_state = 'DOWN' WHERE pk_host = ':host'`},
		{"host locked", `UPDATE host SET str_lock_state = 'LOCKED' WHERE pk_host = ':host'`},
		{"burst lowered", `UPDATE subscription SET int_burst = 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, ctx, ps := placedFarm(t, booktest.SmallFarm(1, 1600, 1, 1, 4, 200), 4)
			change := strings.NewReplacer(":host", ps[0].Host.ID, ":job", ps[0].Layer.JobID).Replace(tc.change)

			// Hold the booking after its reads: it locks the point row last
			// of the rows the change could touch.
			hold, err := db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback(context.Background())
			var holdPID int32
			if err := hold.QueryRow(ctx, `SELECT pg_backend_pid() FROM point FOR UPDATE`).Scan(&holdPID); err != nil {
				t.Fatal(err)
			}
			b := newTestBooker(db.Pool, BookerConfig{})
			type result struct {
				booked int
				err    error
			}
			booked := make(chan result, 1)
			go func() {
				res, err := b.Book(ctx, testCluster, ps)
				booked <- result{len(res.Booked), err}
			}()
			waitBlockedBy(ctx, t, db.Pool, holdPID)

			// The change, in a transaction of its own that takes its
			// snapshot after the write; it may wait for the booking.
			changed := make(chan error, 1)
			var snap string
			go func() {
				changed <- pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, change); err != nil {
						return err
					}
					return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
				})
			}()
			// Either the change commits now (it does not wait for the
			// booking) or it waits for the booking's locks.
			select {
			case err := <-changed:
				if err != nil {
					t.Fatal(err)
				}
				changed <- nil
			case <-blockedOn(ctx, db.Pool, "UPDATE"):
			}
			if err := hold.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-booked
			if r.err != nil {
				t.Fatal(r.err)
			}
			if err := <-changed; err != nil {
				t.Fatal(err)
			}
			var after int64
			if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox
				WHERE NOT pg_visible_in_snapshot(xmin::text::xid8, $1::pg_snapshot)`, snap).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after > 0 {
				t.Errorf("%d of %d bookings committed after the change (%s), having read the rows from before it",
					after, r.booked, tc.name)
			}
		})
	}
}

// waitBlockedBy waits until some backend waits for a lock pid holds.
func waitBlockedBy(ctx context.Context, t *testing.T, pool *pgxpool.Pool, pid int32) {
	t.Helper()
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).
			Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("no backend blocked by the holding transaction")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// blockedOn is closed once a backend running a statement that starts with
// verb waits for a lock.
func blockedOn(ctx context.Context, pool *pgxpool.Pool, verb string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for ctx.Err() == nil {
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
				AND datname = current_database() AND ltrim(query) ILIKE $1 || '%'`, verb).Scan(&n)
			if err == nil && n > 0 {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return ch
}
