package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// follower runs the live view: a sample and a redraw every second, the
// kill once enough of the backlog is booked, and what the run shows
// recorded in run.
type follower struct {
	ctx   context.Context
	v     *view
	fl    *fleet
	pool  *pgxpool.Pool // the view's own
	show  string
	run   *Run
	began time.Time // the hand-over's commit returned

	last     Sample
	lastAt   time.Time // of the last sample
	drawnAt  time.Time // of the last redraw
	drained  bool
	killAt   int // bookings at which to kill an instance; 0 once done
	victim   string
	killedAt time.Time
	retaken  bool
}

// until samples and redraws once a second until done says so. A sample's
// query that does not answer within the second is abandoned and the counts
// shown are the previous ones, marked so: the view never waits on the
// database longer than that.
func (f *follower) until(done func(Sample) bool, limit time.Duration) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s := f.sample()
		now := time.Now()
		booking := !f.drained
		f.v.draw(s)
		if booking && !f.drawnAt.IsZero() {
			f.run.Redraws = append(f.run.Redraws, now.Sub(f.drawnAt))
		}
		f.drawnAt = now
		f.run.Samples = append(f.run.Samples, s)
		f.observe(s)
		if done(s) {
			return nil
		}
		if err := f.fl.failed(); err != nil {
			return err
		}
	wait:
		for {
			b := f.fl.bookings()
			if f.killAt > 0 && b.total >= f.killAt {
				if err := f.kill(b); err != nil {
					return err
				}
			}
			select {
			case <-tick.C:
				break wait
			case <-b.changed:
			case <-f.ctx.Done():
				return f.ctx.Err()
			case <-deadline.C:
				return fmt.Errorf("the demo did not finish within %s (last: %s)", limit, f.v.line(f.last))
			}
		}
	}
}

// sample reads the counts (on the view's own pool, at most 800 ms).
func (f *follower) sample() Sample {
	qctx, cancel := context.WithTimeout(f.ctx, 800*time.Millisecond)
	c, err := readCounts(qctx, f.pool, f.show)
	cancel()
	now := time.Now()
	// Booked is read from the database too: an instance reports a round's
	// bookings when its last batch commits, seconds after the first.
	s := Sample{At: now.Sub(f.began), Waiting: c.waiting, Running: c.running, Done: c.done,
		Booked: c.running + c.done, Clusters: c.clusters}
	if err != nil {
		s.Waiting, s.Running, s.Done, s.Booked, s.Clusters, s.Stale = f.last.Waiting, f.last.Running, f.last.Done,
			f.last.Booked, f.last.Clusters, true
	}
	from, booked := f.lastAt, f.last.Booked
	if from.IsZero() {
		from, booked = f.began, 0
	}
	if dt := now.Sub(from).Seconds(); dt > 0 {
		s.Rate = float64(s.Booked-booked) / dt
	}
	f.last, f.lastAt = s, now
	return s
}

// event records and shows an event.
func (f *follower) event(text string) {
	e := Event{At: time.Since(f.began), Text: text}
	f.run.Events = append(f.run.Events, e)
	f.v.event(e)
}

// kill sends SIGKILL to the live instance owning the most clusters.
func (f *follower) kill(b bookings) error {
	f.killAt = 0
	victim, most := "", -1
	for _, name := range f.run.Instances {
		if n := f.last.Clusters[name]; n > most {
			victim, most = name, n
		}
	}
	if err := f.fl.kill(victim); err != nil {
		return err
	}
	f.victim, f.killedAt = victim, time.Now()
	f.v.killed[victim] = true
	f.event(fmt.Sprintf("SIGKILL to %s, which owned %d clusters and had booked %s frames (%s of %s booked in all)",
		victim, most, thousands(b.perInstance[victim]), thousands(b.total), thousands(f.run.Frames)))
	return nil
}

// observe notes the takeover and the end of the drain when a sample shows
// them.
func (f *follower) observe(s Sample) {
	if s.Stale {
		return
	}
	if f.victim != "" && !f.retaken && s.Clusters[f.victim] == 0 && s.Clusters[""] == 0 {
		f.retaken = true
		var owners []string
		for _, name := range f.run.Instances {
			if name != f.victim {
				owners = append(owners, fmt.Sprintf("%s %d", name, s.Clusters[name]))
			}
		}
		f.event(fmt.Sprintf("%s's clusters are owned again, seen %s after the kill (the view looks once a second): %s; booking goes on",
			f.victim, roundDur(time.Since(f.killedAt)), strings.Join(owners, ", ")))
	}
	if !f.drained && s.Waiting == 0 && s.Running+s.Done >= f.run.Frames {
		f.drained = true
		b := f.fl.bookings()
		f.run.ToDrain, f.run.Window = b.last.Sub(f.began), b.last.Sub(b.first)
		var waits []time.Duration
		for _, at := range f.fl.commitTimes() {
			waits = append(waits, at.Sub(f.began))
		}
		slices.Sort(waits)
		f.run.WaitP50, f.run.WaitP99, f.run.WaitFrames = percentile(waits, 0.5), percentile(waits, 0.99), len(waits)
		f.event(fmt.Sprintf("every frame of the backlog is booked: the last booking committed %s after the hand-over", roundDur(f.run.ToDrain)))
	}
}
