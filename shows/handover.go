package shows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/internal/wait"
)

// Managed is what Manage did.
type Managed struct {
	Show    Show
	Already bool // it was managed before: nothing changed
	// Refused counts the counter rows Cuebot's guard refused to set to
	// their sums (held at their caps: counters.Recompute).
	Refused int
}

// Manage hands the show named name to cuesched: Cuebot's booking skips it
// from the commit on. Its counters are brought to their sums in the same
// transaction, since from then on cuesched keeps them. An unknown show is an
// *UnknownError, an inactive one ErrInactive; a show already managed is left
// as it is (Already).
func Manage(ctx context.Context, pool *pgxpool.Pool, name string) (Managed, error) {
	var m Managed
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		id, managed, active, err := lockShow(ctx, tx, name)
		if err != nil {
			return err
		}
		switch {
		case managed:
			m.Already = true
			return nil
		case !active:
			return fmt.Errorf("%w: show %q has b_active false, and cuesched books active shows only: "+
				"activate it in Cuebot first", ErrInactive, name)
		}
		if _, err := tx.Exec(ctx, `UPDATE show SET b_scheduler_managed = true WHERE pk_show = $1`, id); err != nil {
			return denied(err, "mark show "+name+" managed")
		}
		refused, err := counters.RecomputeShows(ctx, tx, []string{id})
		if err != nil {
			return denied(err, "recompute the counters of show "+name)
		}
		m.Refused = len(refused)
		return nil
	})
	if err != nil {
		return m, manageErr(ctx, pool, name, err)
	}
	m.Show, err = Get(ctx, pool, name)
	return m, err
}

// errNoShow is lockShow's word for a name no show has; manageErr turns it
// into an UnknownError outside the transaction.
var errNoShow = errors.New("no such show")

// lockShow locks the row of the show named name.
func lockShow(ctx context.Context, tx pgx.Tx, name string) (id string, managed, active bool, err error) {
	err = tx.QueryRow(ctx, `SELECT pk_show, b_scheduler_managed, b_active FROM show WHERE str_name = $1 FOR UPDATE`,
		name).Scan(&id, &managed, &active)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, false, errNoShow
	}
	if err != nil {
		return "", false, false, denied(err, "update show "+name)
	}
	return id, managed, active, nil
}

func manageErr(ctx context.Context, pool *pgxpool.Pool, name string, err error) error {
	if errors.Is(err, errNoShow) {
		return unknown(ctx, pool, name)
	}
	return err
}

// ReleaseOptions tune Release.
type ReleaseOptions struct {
	// Settle is how long after the flag flips a Cuebot may still take the
	// show for managed (one that caches the flag): the recompute runs after
	// it. Zero: Cuebot reads the flag in each release (DESIGN.md).
	Settle time.Duration
	// ReadersWait bounds the wait for the transactions that had read table
	// show before the flag flipped; zero: 30s.
	ReadersWait time.Duration
	// Waiting, when set, is told how many of those transactions the
	// release waits for, before it waits (tests).
	Waiting func(readers int)
}

// Released is what Release did.
type Released struct {
	// Show is the show afterwards; Show.Cuesched of its frames still run
	// under cuesched (Cuebot lowers their counters as they finish).
	Show    Show
	Already bool // it was not managed: nothing to hand over
	// Waited counts the transactions that had read table show before the
	// flag flipped, waited for before the recompute.
	Waited int
	// Lingering are the pids of those still open after ReadersWait: the
	// recompute ran without them, so if one is a Cuebot release of this
	// show, the counters it leaves are off until release runs again.
	Lingering []int32
	// Refused counts the counter rows Cuebot's guard refused to set to
	// their sums (held at their caps).
	Refused int
}

// Release hands the show named name back to Cuebot at once, and leaves its
// counters at their sums (see the package comment for why this order). An
// unknown show is an *UnknownError. A show not managed is not changed, but
// its counters are recomputed all the same, which repairs a release whose
// wait for readers ran out (Lingering).
func Release(ctx context.Context, pool *pgxpool.Pool, name string, opts ReleaseOptions) (Released, error) {
	var r Released
	var id string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var managed bool
		var err error
		if id, managed, _, err = lockShow(ctx, tx, name); err != nil {
			return err
		}
		if !managed {
			r.Already = true
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1`, id); err != nil {
			return denied(err, "hand show "+name+" back to Cuebot")
		}
		return nil
	})
	if err != nil {
		return r, manageErr(ctx, pool, name, err)
	}
	if !r.Already {
		if r.Waited, r.Lingering, err = waitReaders(ctx, pool, opts.ReadersWait, opts.Waiting); err != nil {
			return r, fmt.Errorf("show %s is handed back to Cuebot, but its counters are not recomputed yet "+
				"(run release again): %w", name, err)
		}
		if !wait.Sleep(ctx, opts.Settle) {
			return r, fmt.Errorf("show %s is handed back to Cuebot, but its counters are not recomputed yet "+
				"(run release again): %w", name, ctx.Err())
		}
	}
	if r.Refused, err = recomputeReleased(ctx, pool, id, name); err != nil {
		return r, err
	}
	r.Show, err = Get(ctx, pool, name)
	return r, err
}

func recomputeReleased(ctx context.Context, pool *pgxpool.Pool, id, name string) (int, error) {
	var refused []counters.Refusal
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		refused, err = counters.RecomputeReleased(ctx, tx, id)
		return err
	})
	if err != nil {
		return 0, denied(err, "recompute the counters of show "+name)
	}
	return len(refused), nil
}

// readersSQL lists the transactions (virtual ids and pids) of this database
// holding a lock on table show, all of them ($2) or those among $1: a
// transaction keeps the lock a read of the table took until it ends.
const readersSQL = `
SELECT DISTINCT virtualtransaction, coalesce(pid, 0) FROM pg_locks
 WHERE locktype = 'relation' AND relation = 'show'::regclass
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND pid IS DISTINCT FROM pg_backend_pid()
   AND ($2 OR virtualtransaction = ANY($1::text[]))`

// waitReaders waits until every transaction that holds a lock on table show
// now has ended, at most bound (zero: 30s), telling waiting (when set) how
// many there are first. It returns how many there were and the pids of
// those still open at the bound.
func waitReaders(ctx context.Context, pool *pgxpool.Pool, bound time.Duration, waiting func(int)) (int, []int32, error) {
	if bound <= 0 {
		bound = 30 * time.Second
	}
	readers := func(among []string) ([]string, []int32, error) {
		rows, err := pool.Query(ctx, readersSQL, among, among == nil)
		if err != nil {
			return nil, nil, fmt.Errorf("read the transactions holding table show: %w", err)
		}
		var vxids []string
		var pids []int32
		var vxid string
		var pid int32
		_, err = pgx.ForEachRow(rows, []any{&vxid, &pid}, func() error {
			vxids, pids = append(vxids, vxid), append(pids, pid)
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("read the transactions holding table show: %w", err)
		}
		return vxids, pids, nil
	}
	first, pids, err := readers(nil)
	if err != nil {
		return 0, nil, err
	}
	if waiting != nil {
		waiting(len(first))
	}
	if len(first) == 0 {
		return 0, nil, nil
	}
	deadline := time.Now().Add(bound)
	pause := 5 * time.Millisecond
	for left := first; ; {
		if time.Now().After(deadline) {
			return len(first), pids, nil
		}
		if !wait.Sleep(ctx, pause) {
			return len(first), pids, ctx.Err()
		}
		pause = min(2*pause, 200*time.Millisecond)
		if left, pids, err = readers(left); err != nil || len(left) == 0 {
			return len(first), nil, err
		}
	}
}

// Wait polls every every (zero: 1s) until none of the show's frames runs
// under cuesched, calling progress with each new count, and then recomputes
// the show's counters once more: by then even a Cuebot caching the flag for
// less than the wait lowers them itself. It returns the show as last read;
// when ctx ends first, an error saying how many frames still run.
func Wait(ctx context.Context, pool *pgxpool.Pool, name string, every time.Duration, progress func(int64)) (Show, error) {
	if every <= 0 {
		every = time.Second
	}
	last := int64(-1)
	for {
		s, err := Get(ctx, pool, name)
		if err != nil {
			if ctx.Err() != nil && last >= 0 {
				return s, fmt.Errorf("%d frames of show %s still run under cuesched: %w", last, name, ctx.Err())
			}
			return s, err
		}
		if s.Cuesched != last && progress != nil {
			progress(s.Cuesched)
		}
		last = s.Cuesched
		if s.Cuesched == 0 {
			_, err := recomputeReleased(ctx, pool, s.ID, name)
			return s, err
		}
		if !wait.Sleep(ctx, every) {
			return s, fmt.Errorf("%d frames of show %s still run under cuesched: %w", s.Cuesched, name, ctx.Err())
		}
	}
}
