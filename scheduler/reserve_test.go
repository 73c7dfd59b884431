package scheduler_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/scheduler"
	"github.com/cuesched/cuesched/scheduler/schedulertest"
)

// store is scheduler.Reservations in memory: rows by cluster; saved is
// signalled at each Save.
type store struct {
	mu    sync.Mutex
	rows  map[int32][]match.Reservation
	saved chan struct{}
}

func (s *store) All(context.Context) ([]match.Reservation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []match.Reservation
	for _, rs := range s.rows {
		out = append(out, rs...)
	}
	return out, nil
}

func (s *store) Load(_ context.Context, id int32) ([]match.Reservation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rows[id]), nil
}

func (s *store) Save(_ context.Context, id, _ int32, _ int64, rs []match.Reservation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows[id] = slices.Clone(rs)
	select {
	case s.saved <- struct{}{}:
	default:
	}
	return nil
}

// idle is scheduler.Running over hosts with nothing running.
type idle []match.Host

func (r idle) Running(context.Context) scheduler.RunningRead { return r }
func (r idle) AllHosts(facility, tag string, visit func(match.Host) bool) {
	for _, h := range r {
		if h.Facility == facility && slices.Contains(h.Tags, tag) && !visit(h) {
			return
		}
	}
}
func (r idle) Host(id string) (match.Host, bool) {
	i := slices.IndexFunc(r, func(h match.Host) bool { return h.ID == id })
	if i < 0 {
		return match.Host{}, false
	}
	return r[i], true
}
func (idle) Procs(string) []match.Proc { return nil }
func (idle) Err() error                { return nil }

// Reservations in the database: a round honours another instance's (h1 is
// held for a layer of another cluster, so this cluster's frame goes to h2
// though best fit takes h1 first), and an owner taking a cluster over starts
// from the rows it finds there and drops those whose layer left the queue,
// writing the cluster's rows again.
func TestReservationsInTheDatabase(t *testing.T) {
	t.Parallel()
	h1, h2 := schedulertest.Host("h1", a1, 8), schedulertest.Host("h2", a1, 8)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := &store{saved: make(chan struct{}, 1), rows: map[int32][]match.Reservation{
		99: {{Layer: "wide", LayerName: "wide", Host: "h1", HostName: "h1", Start: now.Add(time.Hour), Made: now}},
		1:  {{Layer: "gone", LayerName: "gone", Host: "h2", HostName: "h2", Start: now.Add(time.Hour), Made: now}},
	}}
	h := schedulertest.New(t, schedulertest.Setup{Hosts: []match.Host{h1, h2},
		Config:  scheduler.Config{Reservations: true, ReservationAfter: time.Minute},
		Running: idle{h1, h2}, Reservations: st})
	h.Owner.Claim(alloc1) // cluster 1
	h.Queue.Add(alloc1, schedulertest.Layer("narrow", a1, 1))
	h.Start()
	select {
	case <-st.saved:
	case <-time.After(time.Minute):
		t.Fatal("the cluster's reservations were never written")
	}
	settle(t, h, 0)
	st.mu.Lock()
	kept := st.rows[1]
	st.mu.Unlock()
	if len(kept) != 0 {
		t.Errorf("cluster 1 keeps %+v: the layer gone left the queue", kept)
	}
	got := h.Booker.Committed()
	if len(got) != 1 || got[0].Host.ID != "h2" {
		t.Errorf("committed %v, want narrow's frame on h2 (h1 is reserved for wide)", got)
	}
}
