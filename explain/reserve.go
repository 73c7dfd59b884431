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

// Reserved is a host reserved for a layer.
type Reserved struct {
	Host  string     `json:"host"`
	Start *time.Time `json:"start,omitempty"` // nil: unknown
}

// reservedFor are the hosts rs reserves for the layer.
func reservedFor(layerID string, rs []match.Reservation) []Reserved {
	var out []Reserved
	for _, r := range rs {
		if r.Layer != layerID {
			continue
		}
		x := Reserved{Host: r.HostName}
		if !r.Start.IsZero() {
			st := r.Start.UTC()
			x.Start = &st
		}
		out = append(out, x)
	}
	return out
}

// reservedWhy says which reservation holds a placement's host and why the
// frame may go there, or "" when none does.
func reservedWhy(p *match.Placement, rs []match.Reservation, now time.Time) string {
	switch p.Use {
	case match.UseHonoured:
		return "reserved for this layer"
	case match.UseBackfill:
		for i := range rs {
			if rs[i].Host == p.Host.ID {
				_, why := match.Backfill(p.Layer, &rs[i], now)
				return why
			}
		}
	}
	return ""
}
