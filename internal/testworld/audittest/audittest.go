// Package audittest runs the invariant audit at the end of a test.
package audittest

import (
	"context"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/audit"
)

// Clean fails the test with every violation the audit finds.
func Clean(tb testing.TB, q audit.Querier, opts ...audit.Options) {
	tb.Helper()
	var o audit.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vs, err := audit.Run(ctx, q, o)
	if err != nil {
		tb.Fatalf("audit: %v", err)
	}
	for _, v := range vs {
		tb.Errorf("audit: %s", v)
	}
}
