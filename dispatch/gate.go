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
// any transaction, until that batch has ended.
//
// Waiting in PostgreSQL instead harms twice. The waiting transaction has
// already locked its hosts and layers (the lock order takes them before the
// jobs and counters that batches share), so Cuebot's host reports and frame
// updates on those rows wait as long as it does: up to a second on the peer
// stress farm. And it holds a transaction id, which keeps PostgreSQL from
// pruning the row versions the batch ahead of it leaves: Cuebot's frame
// triggers update a layer_stat and a job_stat row for every frame booked,
// and the next batch walks those versions. Four workers' batches booking
// one show wait on each other this way (BENCHMARKS.md, "Batches that share
// rows wait outside the database").
//
// Batches wait in arrival order among those they overlap, so none waits
// forever; a batch that overlaps no earlier one begins at once. The gate
// only moves waits this instance would have had in the database: the row
// locks stay the truth, and a row the gate does not name (another
// instance's, Cuebot's) is waited for there as before.
type gate struct {
	mu    sync.Mutex
	queue []*ticket // in arrival order: the batches in flight and those waiting
}

// ticket is one batch's place in the gate.
type ticket struct {
	rows  map[rowKey]struct{}
	ready chan struct{} // closed once the batch may begin
	began bool
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

// enter waits until no earlier batch overlapping rows is in flight or
// waiting, and returns the batch's ticket, to be given back with leave once
// its transaction has ended. It returns errLeft if leaving is closed first,
// or is closed when the wait ends (a batch of a cluster being handed over
// does not begin), and ctx's error if ctx ends first.
func (g *gate) enter(ctx context.Context, rows map[rowKey]struct{}, leaving <-chan struct{}) (*ticket, error) {
	tk := g.arrive(rows)
	select {
	case <-tk.ready:
		select {
		case <-leaving:
		default:
			return tk, nil
		}
		g.leave(tk)
		return nil, errLeft
	case <-leaving:
		g.leave(tk)
		return nil, errLeft
	case <-ctx.Done():
		g.leave(tk)
		return nil, ctx.Err()
	}
}

// arrive queues a batch; its ticket is ready at once if no earlier batch
// overlaps it.
func (g *gate) arrive(rows map[rowKey]struct{}) *ticket {
	g.mu.Lock()
	defer g.mu.Unlock()
	tk := &ticket{rows: rows, ready: make(chan struct{})}
	g.queue = append(g.queue, tk)
	g.admit()
	return tk
}

// leave takes a batch out of the gate, whether it began or gave up waiting,
// and lets begin the batches that no longer wait for anyone.
func (g *gate) leave(tk *ticket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := slices.Index(g.queue, tk); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
	g.admit()
}

// admit lets begin every waiting batch that overlaps no batch before it.
func (g *gate) admit() {
	for i, tk := range g.queue {
		if tk.began {
			continue
		}
		if !slices.ContainsFunc(g.queue[:i], func(e *ticket) bool { return overlap(e.rows, tk.rows) }) {
			tk.began = true
			close(tk.ready)
		}
	}
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
