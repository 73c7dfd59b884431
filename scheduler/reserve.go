package scheduler

import (
	"slices"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
)

// Reservations with backfill (match/reserve.go): after each round a cluster
// plans its reservations from the layers it left waiting for capacity or
// no-fit, and every cluster's next round honours them all (a host may be in
// an allocation cluster and in tag buckets).

// resvState is one cluster's reservations and since when each of its
// layers has waited for capacity or no-fit without a break.
type resvState struct {
	held  []match.Reservation
	since map[string]time.Time
}

// reserving reports whether the loop plans reservations at all.
func (s *Scheduler) reserving() bool {
	return s.cfg.Reservations && s.deps.Running != nil
}

// reservations are every cluster's reservations, for a round to honour
// (nil when none).
func (s *Scheduler) reservations() []match.Reservation {
	if !s.reserving() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []match.Reservation
	for _, st := range s.resv {
		out = append(out, st.held...)
	}
	return out
}

// Reservations returns every reservation the loop holds now (status and
// tests read it).
func (s *Scheduler) Reservations() []match.Reservation { return s.reservations() }

// reserve plans the cluster's reservations before a round, from the
// layers the rounds before left waiting for capacity or no-fit (live: the
// round's layers, with their waiting frames). Planned before the round, a
// host that emptied since is reserved before narrower work draws it.
func (s *Scheduler) reserve(key cluster.Key, live []*match.Layer) {
	if !s.reserving() {
		return
	}
	now := s.cfg.Now()
	left := make(map[string]int64, len(live))
	s.mu.Lock()
	st := s.resv[key]
	if st == nil {
		st = &resvState{since: map[string]time.Time{}}
		s.resv[key] = st
	}
	var waiting []match.Waiting
	for _, l := range live {
		left[l.ID] = max(l.Waiting, int64(len(l.Frames)))
		if since, ok := st.since[l.ID]; ok {
			waiting = append(waiting, match.Waiting{Layer: l, Since: since})
		}
	}
	var elsewhere []match.Reservation
	for k, o := range s.resv {
		if k != key {
			elsewhere = append(elsewhere, o.held...)
		}
	}
	prev := st.held
	s.mu.Unlock()

	next, made := match.Reserve(prev, left, waiting, s.deps.Running, match.ReserveOptions{
		Now: now, After: s.cfg.ReservationAfter, TagFilter: s.tagFilter(key), Memory: s.cfg.Memory,
		Elsewhere: elsewhere,
	})
	s.mu.Lock()
	st.held = next
	s.mu.Unlock()
	if len(made) > 0 && s.cfg.OnReserved != nil {
		s.cfg.OnReserved(made)
	}
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
	}
}
