package dispatch

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/cuesched/cuesched/match"
)

// gate orders the Booker's own batches before they begin: a batch that
// would lock a row another batch of this instance holds waits here, outside
// any transaction, until that batch has ended; the batches that waited for
// it then begin together, in one transaction.
//
// Waiting in PostgreSQL instead harms twice. The waiting transaction has
// already locked its hosts and layers (the lock order takes them before the
// jobs and counters that batches share), so Cuebot's host reports and frame
// updates on those rows wait as long as it does: up to a second on the peer
// stress farm. And it holds a transaction id, which keeps PostgreSQL from
// pruning the row versions the batch ahead of it leaves: Cuebot's frame
// triggers update a layer_stat and a job_stat row for every frame booked,
// and the next batch walks those versions. Four workers' batches booking
// one show wait on each other this way (BENCHMARKS.md, "An in-process gate
// for batches sharing rows").
//
// Batches that waited are booked together because they would run one after
// another anyway: one transaction pays the begin, the locks of the show's
// shared rows and the commit once, and an instance with many small clusters
// books all of them in its turn at the rows it shares with other instances,
// as it did when each of its batches waited in PostgreSQL's queue.
//
// Batches wait in arrival order among those they overlap, so none waits
// forever; a batch that overlaps no earlier one begins at once. The gate
// only moves waits this instance would have had in the database: the row
// locks stay the truth, and a row the gate does not name (another
// instance's, Cuebot's) is waited for there as before.
type gate struct {
	// most is how many placements one transaction takes when batches
	// that waited are booked together; a batch alone is never split.
	most  int
	mu    sync.Mutex
	queue []*ticket // in arrival order: the batches in flight and those waiting
}

// ticket is one batch's place in the gate.
type ticket struct {
	m     *member
	rows  map[rowKey]struct{}
	ready chan struct{} // closed once the batch begins, alone or in a leader's transaction
	began bool
	// lead is the batch whose transaction books this one (nil: its own);
	// group are the batches a leader's transaction books besides its own.
	lead  *ticket
	group []*ticket
	// done is closed once a batch booked in a leader's transaction has its
	// outcome (member.out).
	done chan struct{}
}

// rowKey names a row of Cuebot's that a booking locks for update: table is
// 'h' host, 'l' layer (layer_stat, layer_resource and the layer's frames),
// 'j' job (job_stat, job_resource), 's' subscription (show, allocation), 'f'
// folder_resource, 'p' point (show, department) or 'r' limit_record.
type rowKey struct {
	table byte
	a, b  string
}

// batchRows are the rows a batch of placements locks for update.
func batchRows(ps []match.Placement) map[rowKey]struct{} {
	rows := make(map[rowKey]struct{}, 4*len(ps))
	for _, p := range ps {
		l := p.Layer
		if l == nil {
			continue // dropped by the re-check before it locks anything of its own
		}
		rows[rowKey{'h', p.Host.ID, ""}] = struct{}{}
		rows[rowKey{'l', l.ID, ""}] = struct{}{}
		rows[rowKey{'j', l.JobID, ""}] = struct{}{}
		rows[rowKey{'s', l.ShowID, p.Host.Alloc}] = struct{}{}
		rows[rowKey{'f', l.FolderID, ""}] = struct{}{}
		rows[rowKey{'p', l.ShowID, l.DeptID}] = struct{}{}
		for _, id := range l.Limits {
			rows[rowKey{'r', id, ""}] = struct{}{}
		}
	}
	return rows
}

// errLeft: the batch's cluster was left while the batch waited.
var errLeft = errors.New("the cluster was left while the batch waited")

// enter waits until the batch may begin and returns its ticket. A ticket
// without lead runs the transaction of itself and its group, then gives
// every one of them back with leave; one with a lead waits for done. enter
// returns errLeft if leaving is closed before the batch begins, and ctx's
// error if ctx ends first; once the batch has begun in another's
// transaction, only that transaction's end ends the wait.
func (g *gate) enter(ctx context.Context, m *member, rows map[rowKey]struct{}, leaving <-chan struct{}) (*ticket, error) {
	tk := g.arrive(m, rows)
	select {
	case <-tk.ready:
		return tk, nil
	case <-leaving:
	case <-ctx.Done():
	}
	g.mu.Lock()
	if tk.began { // it began as the wait ended
		g.mu.Unlock()
		return tk, nil
	}
	g.remove(tk)
	g.mu.Unlock()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, errLeft
}

// arrive queues a batch; its ticket is ready at once if no earlier batch
// overlaps it.
func (g *gate) arrive(m *member, rows map[rowKey]struct{}) *ticket {
	g.mu.Lock()
	defer g.mu.Unlock()
	tk := &ticket{m: m, rows: rows, ready: make(chan struct{}), done: make(chan struct{})}
	g.queue = append(g.queue, tk)
	g.admit()
	return tk
}

// leave takes a leader's batches out of the gate once its transaction has
// ended, and lets begin the batches that no longer wait for anyone.
func (g *gate) leave(tk *ticket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range append([]*ticket{tk}, tk.group...) {
		if i := slices.Index(g.queue, t); i >= 0 {
			g.queue = slices.Delete(g.queue, i, i+1)
		}
	}
	g.admit()
}

// remove takes out a batch that gave up waiting. The caller holds mu.
func (g *gate) remove(tk *ticket) {
	if i := slices.Index(g.queue, tk); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
	g.admit()
}

// admit lets begin every waiting batch that overlaps no batch before it,
// and books with it, in its transaction, every later waiting batch that
// overlaps only it and those it already took, while they fit in most. The
// caller holds mu.
func (g *gate) admit() {
	var begun []*ticket
	for i, tk := range g.queue {
		if tk.began {
			continue
		}
		var lead *ticket
		blocked := false
		for _, e := range g.queue[:i] {
			if !overlap(e.rows, tk.rows) {
				continue
			}
			l := e
			if e.lead != nil {
				l = e.lead
			}
			if slices.Contains(begun, l) && (lead == nil || lead == l) {
				lead = l
				continue
			}
			blocked = true
			break
		}
		switch {
		case blocked:
		case lead == nil:
			tk.began = true
			begun = append(begun, tk)
		case lead.placements()+len(tk.m.ps) <= g.most:
			tk.began, tk.lead = true, lead
			lead.group = append(lead.group, tk)
		}
	}
	for _, tk := range begun {
		for _, f := range tk.group {
			close(f.ready)
		}
		close(tk.ready)
	}
}

// placements is how many placements a leader's transaction books: its own
// batch's and its group's.
func (tk *ticket) placements() int {
	n := len(tk.m.ps)
	for _, f := range tk.group {
		n += len(f.m.ps)
	}
	return n
}

// waiting is how many batches wait in the gate.
func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, tk := range g.queue {
		if !tk.began {
			n++
		}
	}
	return n
}

func overlap(a, b map[rowKey]struct{}) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	for k := range a {
		if _, ok := b[k]; ok {
			return true
		}
	}
	return false
}
