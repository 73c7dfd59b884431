package scheduler

import (
	"context"
	"slices"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
)

// Reservations with backfill (match/reserve.go): before each round a
// cluster plans its reservations from the layers its rounds left waiting for
// capacity or no-fit, and every round honours every cluster's (a host may be
// in an allocation cluster and in tag buckets owned by other instances).
// With Deps.Reservations they live in the database: the owner writes its
// cluster's behind the fence, a new owner starts from the rows it finds,
// and every round reads them all.

// resvState is one cluster's reservations and since when each of its
// layers has waited for capacity or no-fit without a break.
type resvState struct {
	held   []match.Reservation
	since  map[string]time.Time
	loaded bool                // the rows of the database were read (a new owner's start)
	saved  []match.Reservation // what the database holds of held, as last written
	judged time.Time           // when a planning last judged busy hosts (resvJudge)
}

// resvJudge is how often a cluster's planning judges when busy hosts will
// have room, which reads every host of a waiting layer's tags and the frames
// running there (from the database, in cuesched run); between, each round
// keeps, drops and trades for hosts with room now, by a walk of the index.
// A layer that found no host is looked for again after it, not every round.
const resvJudge = 15 * time.Second

// resvRead is every cluster's reservations as last read from the
// database, shared by the rounds for resvFresh.
type resvRead struct {
	at  time.Time
	set *match.ReservationSet
}

// resvFresh is how long a read of every reservation serves the rounds. A
// round honours what it read; the booking's re-check reads the rows of its
// hosts in its transaction, so a reservation a round did not see yet costs
// a dropped placement, never a booking on a reserved host. A few dozen rows
// read once a second, not once a round.
const resvFresh = time.Second

// reserving reports whether the loop plans reservations at all.
func (s *Scheduler) reserving() bool {
	return s.cfg.Reservations && s.deps.Running != nil
}

// reservations are every cluster's reservations, for a round to honour
// (nil when none): the database's when it keeps them (a read every
// resvFresh at most), else the loop's own, indexed once per change.
func (s *Scheduler) reservations(ctx context.Context) *match.ReservationSet {
	if !s.reserving() {
		return nil
	}
	if store := s.deps.Reservations; store != nil {
		s.mu.Lock()
		read := s.resvRead
		s.mu.Unlock()
		if now := s.cfg.Clock(); read.at.IsZero() || now.Sub(read.at) >= resvFresh {
			rows, err := store.All(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("read reservations: the round honours those read before", "err", err)
				}
				return read.set
			}
			set := match.NewReservationSet(rows)
			s.mu.Lock()
			s.resvRead = resvRead{at: now, set: set}
			s.mu.Unlock()
			s.deps.Hosts.SetReservations(set)
			return set
		}
		return read.set
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.resvSetOK {
		var all []match.Reservation
		for _, st := range s.resv {
			all = append(all, st.held...)
		}
		s.resvSet, s.resvSetOK = match.NewReservationSet(all), true
		s.deps.Hosts.SetReservations(s.resvSet)
	}
	return s.resvSet
}

// reserve plans the cluster's reservations before a round, from the
// layers the rounds before left waiting for capacity or no-fit (live: the
// round's layers, with their waiting frames). Planned before the round, a
// host that emptied since is reserved before narrower work draws it.
func (s *Scheduler) reserve(ctx context.Context, c ownership.Claim, live []*match.Layer) {
	if !s.reserving() {
		return
	}
	key, store := c.Key, s.deps.Reservations
	s.mu.Lock()
	st := s.resv[key]
	if st == nil {
		st = &resvState{since: map[string]time.Time{}}
		s.resv[key] = st
	}
	loaded := st.loaded
	s.mu.Unlock()
	if store != nil && !loaded && !s.resvLoad(ctx, c, st) {
		return
	}
	now := s.cfg.Now()
	left := make(map[string]int64, len(live))
	s.mu.Lock()
	var waiting []match.Waiting
	for _, l := range live {
		left[l.ID] = max(l.Waiting, int64(len(l.Frames)))
		if since, ok := st.since[l.ID]; ok {
			waiting = append(waiting, match.Waiting{Layer: l, Since: since})
		}
	}
	prev := st.held
	judge := st.judged.IsZero() || now.Sub(st.judged) >= resvJudge
	s.mu.Unlock()

	var running RunningRead
	var judged match.Running // nil: room now only
	if judge {
		running = s.deps.Running.Running(ctx)
		judged = running
	}
	next, made, didJudge := match.Reserve(prev, left, waiting, s.deps.Hosts, judged, match.ReserveOptions{
		Now: now, After: s.cfg.ReservationAfter, TagFilter: s.tagFilter(key), Memory: s.cfg.Memory,
		Elsewhere: s.reservations(ctx),
	})
	if running != nil {
		if err := running.Err(); err != nil && ctx.Err() == nil {
			s.log.Warn("read the frames running on hosts: their hosts are not reserved this round", "cluster", key,
				"err", err)
		}
	}
	s.mu.Lock()
	if didJudge {
		st.judged = now
	}
	if !sameReservations(prev, next) {
		s.resvSetOK = false
	}
	st.held = next
	saved := st.saved
	s.mu.Unlock()
	if store != nil && !sameReservations(saved, next) {
		s.resvSave(ctx, c, st, next)
	}
	if len(made) > 0 && s.cfg.OnReserved != nil {
		s.cfg.OnReserved(made)
	}
}

// resvLoad starts a cluster's reservations from its rows in the database:
// a new owner (or this one, started) takes a previous owner's, which stand
// until they are dropped by the same rules. false: not read.
func (s *Scheduler) resvLoad(ctx context.Context, c ownership.Claim, st *resvState) bool {
	rows, err := s.deps.Reservations.Load(ctx, c.ID)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("read the cluster's reservations: trying again next round", "cluster", c.Key, "err", err)
		}
		return false
	}
	s.mu.Lock()
	st.held, st.saved, st.loaded = rows, rows, true
	s.mu.Unlock()
	return true
}

// resvSave writes the cluster's reservations, behind the fence.
func (s *Scheduler) resvSave(ctx context.Context, c ownership.Claim, st *resvState, next []match.Reservation) {
	if err := s.deps.Reservations.Save(ctx, c.ID, s.deps.Owner.View().Instance, c.Epoch, next); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("write the cluster's reservations: written again next round", "cluster", c.Key, "err", err)
		}
		return
	}
	s.mu.Lock()
	st.saved = next
	s.resvRead = resvRead{} // read again, with these
	s.mu.Unlock()
}

// sameReservations reports whether a and b hold the same hosts for the
// same layers from the same starts, made at the same times (a reservation
// made again must be written again: others judge it expired by its making).
func sameReservations(a, b []match.Reservation) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]match.Reservation, len(a))
	for _, r := range a {
		m[r.Host] = r
	}
	for _, r := range b {
		o, ok := m[r.Host]
		if !ok || o.Layer != r.Layer || !o.Start.Equal(r.Start) || !o.Made.Equal(r.Made) {
			return false
		}
	}
	return true
}

// reserved notes what a round did for the reservations: the layers it left
// waiting for capacity or no-fit (since when each has, without booking a
// frame) and the reservations its bookings honoured, which are done.
func (s *Scheduler) reserved(key cluster.Key, waits []match.Wait, booked []dispatch.Booking) {
	if !s.reserving() {
		return
	}
	now := s.cfg.Now()
	placed := map[string]bool{}
	honoured := map[string]bool{}
	for _, b := range booked {
		placed[b.Placement.Layer.ID] = true
		if b.Placement.Use == match.UseHonoured {
			honoured[b.Placement.Host.ID] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.resv[key]
	if st == nil {
		return
	}
	still := make(map[string]time.Time, len(waits))
	for _, w := range waits {
		if w.Reason != match.ReasonCapacity && w.Reason != match.ReasonNoFit {
			continue
		}
		// A layer that booked a frame is not starved: its wait starts
		// again (narrow layers in a full farm take cores as they free).
		since, ok := st.since[w.Layer.ID]
		if !ok || placed[w.Layer.ID] {
			since = now
		}
		still[w.Layer.ID] = since
	}
	st.since = still
	if len(honoured) > 0 {
		st.held = slices.DeleteFunc(slices.Clone(st.held), func(r match.Reservation) bool { return honoured[r.Host] })
		s.resvSetOK = false
	}
}
