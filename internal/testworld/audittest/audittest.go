// Package audittest runs the invariant audit at the end of a test.
package audittest

import (
	"context"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/audit"
)

// Clean fails the test with every illegal finding of the audit, and logs the
// others (over a limit a later change left legal).
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
	Report(tb, vs)
}

// Report fails the test with every illegal finding of vs and logs the
// others, as Clean does, for a caller that ran the audit itself.
func Report(tb testing.TB, vs []audit.Violation) {
	tb.Helper()
	for _, v := range vs {
		if v.Kind == audit.Illegal {
			tb.Errorf("audit: %s", v)
		} else {
			tb.Logf("audit: %s", v)
		}
	}
}
