package explain

import (
	"testing"
	"time"

	"github.com/cuesched/cuesched/match"
)

func TestWarmWhy(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		p    match.Placement
		want string
	}{
		{match.Placement{}, ""},
		{match.Placement{Warm: match.WarmLayer, Ran: match.Ran{At: now.Add(-7*time.Minute - 30*time.Second)}},
			"warm: ran a frame of this layer 7 min ago"},
		{match.Placement{Warm: match.WarmJob, Ran: match.Ran{At: now.Add(-time.Minute)}}, "warm: ran a frame of this job 1 min ago"},
		{match.Placement{Warm: match.WarmLayer, Ran: match.Ran{At: now.Add(-time.Hour), Running: 2}}, "warm: runs a frame of this layer"},
	} {
		if got := warmWhy(&tc.p, now); got != tc.want {
			t.Errorf("warmWhy(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}
