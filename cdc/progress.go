package cdc

import (
	"context"
	"fmt"
	"sync"
)

// Feed keeps a Sink equal to the database: the replication Stream (a
// snapshot, then every committed transaction) or the Poller (a snapshot every
// interval, for servers without logical replication). Whoever reads the
// Sink's state waits on the feed alone and never asks which one runs.
type Feed interface {
	// Run feeds the Sink until ctx ends; it returns nil then.
	Run(ctx context.Context) error
	// Ready is closed once the first snapshot has been loaded.
	Ready() <-chan struct{}
	// WaitApplied returns once the Sink reflects every transaction
	// committed before lsn, or with ctx's error.
	WaitApplied(ctx context.Context, lsn LSN) error
	// Applied is the position up to which the Sink reflects every
	// committed transaction.
	Applied() LSN
}

// progress is a feed's applied position, the waiters on it and the first
// load: what Stream and Poller share.
type progress struct {
	mu      sync.Mutex
	applied LSN
	waiters []waiter
	ready   chan struct{}
	loaded  bool
}

type waiter struct {
	lsn LSN
	ch  chan struct{}
}

func newProgress() progress { return progress{ready: make(chan struct{})} }

// Applied is the position up to which every committed transaction has been
// applied.
func (p *progress) Applied() LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// WaitApplied returns once every transaction committed before lsn has been
// applied (dispatch waits with the pg_current_wal_lsn() it read right after
// a booking's commit), or with ctx's error.
func (p *progress) WaitApplied(ctx context.Context, lsn LSN) error {
	p.mu.Lock()
	if p.applied >= lsn {
		p.mu.Unlock()
		return nil
	}
	w := waiter{lsn: lsn, ch: make(chan struct{})}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, o := range p.waiters {
			if o.ch == w.ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		return fmt.Errorf("wait for the host cache to apply %s: %w", lsn, ctx.Err())
	}
}

// Ready is closed once the first snapshot has been loaded.
func (p *progress) Ready() <-chan struct{} { return p.ready }

func (p *progress) setApplied(lsn LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if lsn <= p.applied {
		return
	}
	p.release(lsn)
}

// reset is a snapshot loaded at lsn: the Sink reflects the database as of
// lsn, whatever was applied before. After a failover lsn may lie below the
// old primary's positions (WAL it flushed that the promoted standby never
// had): keeping the higher figure would pass waits the Sink has not met.
func (p *progress) reset(lsn LSN) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release(lsn)
}

// release sets the applied position and wakes the waiters it meets. The
// caller holds mu.
func (p *progress) release(lsn LSN) {
	p.applied = lsn
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if w.lsn <= lsn {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

// markLoaded closes Ready on the first call.
func (p *progress) markLoaded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		p.loaded = true
		close(p.ready)
	}
}
