package cdc

import (
	"context"
	"testing"
)

// After a failover the new primary's positions may lie below what the old
// one had sent (WAL it flushed that never reached the standby). A feed that
// loads a snapshot there applies from the snapshot's position: waiting for
// a position between the two must wait, not pass on the old primary's
// figure.
func TestReloadLowersApplied(t *testing.T) {
	t.Parallel()
	p := newProgress()
	p.setApplied(LSN(0x5000))
	p.reset(LSN(0x3000))
	if got := p.Applied(); got != LSN(0x3000) {
		t.Errorf("applied after a reload at 0/3000 = %s, want 0/3000", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.WaitApplied(ctx, LSN(0x4000)); err == nil {
		t.Error("WaitApplied(0/4000) passed after a reload at 0/3000")
	}
	if err := p.WaitApplied(ctx, LSN(0x3000)); err != nil {
		t.Errorf("WaitApplied(0/3000) after a reload at 0/3000: %v", err)
	}
}
