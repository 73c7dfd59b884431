// Package wait holds the one pause every retry loop of cuesched takes: a
// sleep that ends early when its owner stops.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or less when ctx ends first: it reports whether it waited
// the whole d (false: ctx ended, stop).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
