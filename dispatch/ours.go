package dispatch

import "sync"

// Ours remembers the ids of an instance's latest booking transactions, as
// the change stream names them (the low 32 bits of the 64-bit id). A
// Booker given one records each transaction's id before its COMMIT, so the
// stream cannot deliver a booking's changes before its id is known.
//
// The instance drops the work hints its own bookings send. A booking
// transaction fires one of cuesched's hint triggers only when it books a
// layer's last waiting frame (migration 0013's drained hint): the hint
// exists for the other instances' queues. The owner learns that the layer
// drained from its cluster's next round, which follows every round that
// booked and finds the layer without frames; taking the hint as well had it
// read the job's layers again and wake every cluster holding one that still
// waits, once per layer drained: 975 hints and 14 reads of the queue for one
// booking of the peer stress farm (BENCHMARKS.md). A cluster handed over
// between a booking and that next round leaves the drained layer in the
// giver's queue until another hint names its job, as every instance's queue
// kept such layers before migration 0013; the new owner drops it from its
// own queue at its first round.
type Ours struct {
	mu   sync.Mutex
	set  map[uint32]struct{}
	ring []uint32 // the ids in set, oldest overwritten first
	next int
}

// NewOurs remembers the last n booking transactions (at least 1).
func NewOurs(n int) *Ours {
	n = max(n, 1)
	return &Ours{set: make(map[uint32]struct{}, n), ring: make([]uint32, n)}
}

// add records xid; a nil Ours records nothing.
func (o *Ours) add(xid uint32) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.set[xid]; ok {
		return
	}
	if old := o.ring[o.next]; old != 0 {
		delete(o.set, old)
	}
	o.ring[o.next] = xid
	o.next = (o.next + 1) % len(o.ring)
	o.set[xid] = struct{}{}
}

// Has reports whether xid is one of the recorded booking transactions.
func (o *Ours) Has(xid uint32) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.set[xid]
	return ok
}
