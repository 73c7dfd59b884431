package explain

import (
	"fmt"
	"io"
	"time"

	"github.com/cuesched/cuesched/match"
)

// warmWhy is why warmth chose a placement's host (match.Options.Locality),
// or "" when it did not.
func warmWhy(p *match.Placement, now time.Time) string {
	var of string
	switch p.Warm {
	case match.WarmLayer:
		of = "this layer"
	case match.WarmJob:
		of = "this job"
	default:
		return ""
	}
	if p.Ran.Running > 0 {
		return fmt.Sprintf("warm: runs a frame of %s", of)
	}
	return fmt.Sprintf("warm: ran a frame of %s %d min ago", of, int(max(0, now.Sub(p.Ran.At)).Minutes()))
}

// printWhy prints, once per host, why the plan chose it where it says.
func printWhy(w io.Writer, ps []Placement) {
	seen := map[string]bool{}
	for _, p := range ps {
		if p.Why != "" && !seen[p.Host] {
			seen[p.Host] = true
			fmt.Fprintf(w, "  host %s: %s\n", p.Host, p.Why)
		}
	}
}
