package explain

import (
	"fmt"
	"time"

	"github.com/cuesched/cuesched/match"
)

// Run is how long a layer's frames are expected to run (match.ExpectedRun),
// which decides whether they may backfill a host another layer reserved.
type Run struct {
	Seconds float64 `json:"seconds"` // 0: unknown
	// From is whose finished frames it is the mean of: layer, job or
	// service; "" unknown.
	From string `json:"from"`
	Why  string `json:"why"`
}

// expectedRun is l's expected run, and what it means for backfill.
func expectedRun(l *match.Layer) *Run {
	d, from, ok := match.ExpectedRun(l)
	if !ok {
		return &Run{Why: "expected run unknown (no finished frame of the layer, its job or its service): " +
			"never backfilled on a host another layer reserved"}
	}
	return &Run{Seconds: d.Seconds(), From: from, Why: fmt.Sprintf("expected run %s (the mean of its %s's finished frames): "+
		"backfilled on a host another layer reserved only when that ends before the reservation's start",
		d.Round(time.Second), from)}
}
