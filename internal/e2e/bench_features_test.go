package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// everyFeature is issue 15's "every feature on" as `cuesched run` flags:
// locality, memory from history for every show, and reservations.
var everyFeature = []string{
	"--locality=true",
	"--memory-from-history=*", "--memory-headroom=0.2",
	"--reservations=true",
}

// TestBenchEndToEndFeatures is issue 15's booking throughput with every
// feature on against today's, in the same run: TestBenchEndToEndBooking's
// process booking (a whole `cuesched run --dry-run`, normal build, timed
// from the commit handing the show over until all 6,000 frames of the peer
// stress farm run), once with today's settings and once with everyFeature,
// each on a fresh copy of one template, rounds alternating which goes
// first. In the template every layer has a history (10 frames finished,
// using 40-55% of the memory it asks) so memory from history trims it, and
// locality finds the hosts warm that the same booking filled. The target is
// a median ratio (every frames/s over today's) of at least 0.9. It logs the
// ratio of the CPU the bookings cost too (today's over every's: the
// instance, its database sessions and its walsender), which the machine's
// other work sways less than the wall clock. Run it with
//
//	CUESCHED_BENCH=1 go test -count=1 -v -timeout 30m -run TestBenchEndToEndFeatures ./internal/e2e
//
// (CUESCHED_BENCH_ROUNDS sets the rounds, default 3.)
func TestBenchEndToEndFeatures(t *testing.T) {
	if !benchOn() {
		t.Skip("set CUESCHED_BENCH=1 to run the end-to-end booking benchmark with every feature on")
	}
	rounds := benchRounds()
	bin := normalBinary(t)
	tpl, admin := benchTemplate(t, seed.PeerStress(11), 11)
	total := count(t, tpl.Pool, `SELECT count(*) FROM frame WHERE str_state = 'WAITING'`)
	exec1(t, tpl.Pool, `UPDATE layer_stat SET int_succeeded_count = 10`)
	exec1(t, tpl.Pool, `UPDATE layer_mem m SET int_max_rss = l.int_mem_min * (40 + abs(hashtext(l.pk_layer)) % 16) / 100
		FROM layer l WHERE m.pk_layer = l.pk_layer`)
	exec1(t, tpl.Pool, `UPDATE show SET b_scheduler_managed = false`)
	tpl.Pool.Close() // a template must have no sessions

	var ratios, cpuRatios []float64
	for r := range rounds {
		var today, every booking
		var trimmed int64
		runToday := func() {
			today = processBooking(t, bin, cloneDB(t, admin, tpl, fmt.Sprintf("r%dt", r)), total)
		}
		runEvery := func() {
			db := cloneDB(t, admin, tpl, fmt.Sprintf("r%de", r))
			every = processBooking(t, bin, db, total, everyFeature...)
			trimmed = count(t, db.Pool, `SELECT count(*) FROM proc p JOIN layer l USING (pk_layer)
				WHERE p.int_mem_reserved < l.int_mem_min`)
		}
		if r%2 == 0 {
			runToday()
			runEvery()
		} else {
			runEvery()
			runToday()
		}
		// Without a trimmed frame the run measured nothing of the feature.
		if trimmed == 0 {
			t.Fatalf("round %d: every feature on booked no frame with trimmed memory", r+1)
		}
		ratio, cpuRatio := today.took.Seconds()/every.took.Seconds(), today.cpu.Seconds()/every.cpu.Seconds()
		ratios, cpuRatios = append(ratios, ratio), append(cpuRatios, cpuRatio)
		t.Logf("round %d: today %v (%.0f frames/s, CPU %v), every feature %v (%.0f frames/s, CPU %v, %d of %d frames "+
			"with trimmed memory): ratio %.2f, CPU %.2f", r+1, today.took.Round(time.Millisecond),
			float64(total)/today.took.Seconds(), today.cpu.Round(time.Millisecond), every.took.Round(time.Millisecond),
			float64(total)/every.took.Seconds(), every.cpu.Round(time.Millisecond), trimmed, total, ratio, cpuRatio)
	}
	m := median(ratios)
	t.Logf("booking throughput, every feature on / today: %s, median %.2f (target >= 0.9); CPU today / every: %s, "+
		"median %.2f", fmtRatios(ratios), m, fmtRatios(cpuRatios), median(cpuRatios))
	if m < 0.9 {
		t.Errorf("booking throughput with every feature on: median %.2f of today's, below the target 0.9", m)
	}
}

// fmtRatios writes ratios with two decimals, space-separated.
func fmtRatios(xs []float64) string {
	each := make([]string, len(xs))
	for i, x := range xs {
		each[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(each, " ")
}
