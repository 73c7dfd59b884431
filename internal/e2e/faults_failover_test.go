package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// A failover to a synchronous streaming standby (issue 12): the instances,
// Cuebot's stand-in and the test's pool name both servers in one DSN
// (target_session_attrs=read-write). While frames are booked and launched,
// the primary is stopped (fast, then immediate, alternating) and the
// standby promoted; the instances reconnect to it (the replication stream's
// temporary slot is gone with the old primary: a new one and a resync from
// its snapshot; the listeners and ownership's session anew) and go on.
// Every commit acknowledged before the failover is on the new primary, and
// the case ends with the suite's checks there. Under CUESCHED_CHAOS=1 it
// fails over six times in a row (three fast, three immediate), each time to a standby of the last
// primary started on the old primary's port.
func TestFaultFailover(t *testing.T) {
	t.Parallel()
	fo := newFailover(t)
	w := newFaultWorldOn(t, fo.db)
	insts := []*instance{w.start(t), w.start(t)}
	waitFor(t, time.Minute, "two instances sharing every cluster", func() bool {
		return settled(t, w.db, insts...)
	}, insts...)
	n := cycles(1, 6)
	for c := range n {
		mode := [...]string{"fast", "immediate"}[c%2]
		var frames []string
		for i := range 4 {
			frames = append(frames, w.launch(t, faultTags[(c*4+i)%len(faultTags)], 8)...)
		}
		// Fail over with the job's frames booked and launched, and more
		// to book.
		k := 8 + c%8
		waitFor(t, time.Minute, "the first launches of the cycle", func() bool {
			return len(w.launches(frames)) >= k
		}, insts...)
		acked := w.launchedProcs()
		launched := len(w.launchedFrames(frames))
		before := feedsOf(insts)
		took := fo.failover(t, mode, c < n-1)
		t.Logf("cycle %d: primary stopped (%s) with %d of %d frames launched; standby promoted %v later",
			c, mode, launched, len(frames), took.Round(time.Millisecond))
		w.nothingAckedLost(t, acked)
		resynced(t, insts, before)
		// Work that arrives after the failover is heard of on the new
		// primary.
		frames = append(frames, w.launch(t, faultTags[c%len(faultTags)], 4)...)
		w.succeeded(t, frames, time.Minute, insts...)
	}
	w.finish(t, insts...)
}

// failover is a primary with a synchronous standby, and one database both
// name in its DSN.
type failover struct {
	db               *pgtest.DB
	primary, standby *pgcluster.Cluster
	standbys         int // started, for their names
}

// newFailover starts a cluster of the test's own with a fresh database of
// the Full template and a synchronous standby, and returns the database
// with a DSN naming both servers and a pool on it.
func newFailover(t *testing.T) *failover {
	t.Helper()
	c := pgtest.NewCluster(t, pgcluster.Options{})
	db := pgtest.NewDBIn(t, c)
	fo := &failover{primary: c}
	fo.newStandby(t, 0)
	dsn := pgcluster.MultiHostDSN(db.Name, c.Port, fo.standby.Port)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("pool on %s: %v", dsn, err)
	}
	t.Cleanup(pool.Close)
	fo.db = &pgtest.DB{Name: db.Name, DSN: dsn, URL: db.URL, Pool: pool, Cluster: c}
	return fo
}

// newStandby starts a synchronous standby of the primary on port (0: a
// free one).
func (fo *failover) newStandby(t *testing.T, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	fo.standbys++
	s, err := fo.primary.StartStandby(ctx, fmt.Sprintf("standby_%d", fo.standbys), port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Logf("stop standby: %v", err)
		}
	})
	fo.standby = s
}

// failover stops the primary in mode and promotes the standby; with again,
// the old primary's host (its port) becomes the new primary's standby, for
// the next failover.
func (fo *failover) failover(t *testing.T, mode string, again bool) (took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	old := fo.primary
	if err := old.Shutdown(ctx, mode); err != nil {
		t.Fatalf("stop the primary: %v", err)
	}
	if err := fo.standby.Promote(ctx); err != nil {
		t.Fatalf("promote the standby: %v", err)
	}
	took = time.Since(began)
	fo.primary, fo.standby = fo.standby, nil
	fo.db.Cluster = fo.primary
	// The test's connections to the old primary are gone: its checks
	// start on the new one.
	fo.db.Pool.Reset()
	if !again {
		return took
	}
	if err := old.Stop(); err != nil {
		t.Fatalf("remove the old primary: %v", err)
	}
	fo.newStandby(t, old.Port)
	return took
}

// launchedFrames are the frames of frames some fake RQD was launched with.
func (w *faultWorld) launchedFrames(frames []string) []string {
	var out []string
	for _, l := range w.launches(frames) {
		out = append(out, l.Frame.GetFrameId())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// launchedProcs are the bookings (proc ids) the fake RQDs were launched
// with: each was committed, and the commit acknowledged, before its launch.
func (w *faultWorld) launchedProcs() []string {
	var out []string
	for _, s := range w.all() {
		for _, l := range s.Launches() {
			out = append(out, l.Frame.GetResourceId())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// nothingAckedLost checks that every booking in acked is on the new
// primary (recorded by the booking's own transaction).
func (w *faultWorld) nothingAckedLost(t *testing.T, acked []string) {
	t.Helper()
	var missing []string
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// The first query may meet a connection of the pool to the old primary.
	err := retry(ctx, func() error {
		rows, err := w.db.Pool.Query(ctx, `SELECT p FROM unnest($1::text[]) p
			WHERE NOT EXISTS (SELECT 1 FROM e2e.booking b WHERE b.proc_id = p)`, acked)
		if err != nil {
			return err
		}
		missing = missing[:0]
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				return err
			}
			missing = append(missing, p)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("read the bookings after the failover: %v", err)
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d bookings launched before the failover are missing on the new primary: %v", len(missing),
			len(acked), missing)
		return
	}
	t.Logf("all %d bookings launched before the failover are on the new primary", len(acked))
}

// feeds counts, per instance, the snapshot loads of its replication stream
// and the sessions its listeners (the work listener, ownership's) opened,
// by its log.
type feeds struct{ loads, listens int }

func feedsOf(insts []*instance) []feeds {
	out := make([]feeds, len(insts))
	for k, i := range insts {
		log := i.out.String()
		out[k] = feeds{strings.Count(log, `msg="replication snapshot loaded"`), strings.Count(log, "msg=listening")}
	}
	return out
}

// resynced waits until every instance has loaded a snapshot again (from a
// slot it made on the new primary: the old one's slots are not on a
// standby) and both its listeners listen again.
func resynced(t *testing.T, insts []*instance, before []feeds) {
	t.Helper()
	waitFor(t, time.Minute, "every instance's stream resynced and its listeners back", func() bool {
		for k, f := range feedsOf(insts) {
			if f.loads <= before[k].loads || f.listens < before[k].listens+2 {
				return false
			}
		}
		return true
	}, insts...)
}

// retry calls f until it succeeds or ctx ends.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
