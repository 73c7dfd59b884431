package dispatch

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/internal/writefloor"
	"github.com/cuesched/cuesched/match"
)

// TestBenchBooking measures booking throughput on the peer stress farm
// (6,000 placements planned before timing) as ratios measured in the same
// run (DESIGN.md):
//
//   - cuesched: Booker.Book (dry run: the outbox rows are written, nothing is
//     launched), one transaction per cluster batch of up to 500 placements;
//   - floor: the same write set as plain set-based SQL in transactions of
//     500 frames, each transaction one pipelined round trip, no locks or
//     checks beyond what the writes need (internal/writefloor);
//   - per-frame: the same writes, one transaction (one round trip) per frame;
//   - cuesched-2 and cuesched-4: the clusters split between two or four
//     streams booking at once, as the loop's workers do (batches sharing
//     rows wait in the Booker's gate, and those that waited together book in
//     one transaction); cuesched-4-in-db: four streams whose batches wait for
//     each other in the database instead, each in its own transaction, for
//     what the gate saves.
//
// Each variant books into its own fresh copy of one seeded database. The
// variants advance in lock step, about 500 frames at a time each, in an
// order that rotates every step, and each variant's time is the sum of its
// steps: this machine is shared, and load that comes and goes then hits the
// variants alike. Run it with
//
//	CUESCHED_BENCH=1 go test -run TestBenchBooking -v -timeout 30m ./dispatch
//
// (CUESCHED_BENCH_ROUNDS sets the rounds, default 3.)
func TestBenchBooking(t *testing.T) {
	if os.Getenv("CUESCHED_BENCH") == "" {
		t.Skip("set CUESCHED_BENCH=1 to run the booking benchmark")
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("CUESCHED_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	ctx := ctxFor(t, time.Hour)
	tpl := booktest.LoadFarm(t, seed.PeerStress(1))
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, tpl.Pool), nil)
	if len(ps) != 6000 {
		t.Fatalf("%d placements", len(ps))
	}
	tpl.Pool.Close() // a template must have no sessions

	admin, err := pgx.Connect(ctx, tpl.Cluster.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	clones := 0
	fresh := func() (*pgxpool.Pool, func()) {
		clones++
		name := fmt.Sprintf("%s_c%d", tpl.Name, clones)
		if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tpl.Name)); err != nil {
			t.Fatal(err)
		}
		pool, err := pgxpool.New(ctx, tpl.Cluster.DSN(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := pool.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		return pool, func() {
			pool.Close()
			if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name)); err != nil {
				t.Error(err)
			}
		}
	}

	// The units each variant advances by: a cuesched stream's are its
	// transactions (a cluster's placements, 500 at most), the others' 500
	// frames. With two streams the clusters are split between them by size
	// and a step books one unit of each at once, as the loop's workers do.
	type unit struct {
		id int32
		ps []match.Placement
	}
	streams := func(n int) [][]unit {
		out := make([][]unit, n)
		load := make([]int, n)
		ids, batches := booktest.ByTag(ps)
		slices.SortStableFunc(ids, func(a, b int32) int { return len(batches[b]) - len(batches[a]) })
		for _, id := range ids {
			s := slices.Index(load, slices.Min(load))
			load[s] += len(batches[id])
			for b := batches[id]; len(b) > 0; b = b[min(len(b), 500):] {
				out[s] = append(out[s], unit{id, b[:min(len(b), 500)]})
			}
		}
		return out
	}
	var chunks [][]match.Placement
	for b := ps; len(b) > 0; b = b[min(len(b), 500):] {
		chunks = append(chunks, b[:min(len(b), 500)])
	}
	type variant struct {
		name  string
		units int
		run   func(ctx context.Context, pool *pgxpool.Pool, unit int) error
	}
	booking := func(name string, n int, inDatabase bool) variant {
		ss := streams(n)
		v := variant{name: name}
		for _, s := range ss {
			v.units = max(v.units, len(s))
		}
		var booker *Booker
		var pool *pgxpool.Pool
		v.run = func(ctx context.Context, p *pgxpool.Pool, step int) error {
			if p != pool { // a new round's database
				pool = p
				booker = NewBooker(BookerConfig{Pool: p, DryRun: true, BatchMax: 500, Logger: quiet})
				booker.inDatabase = inDatabase
			}
			errs := make(chan error, len(ss))
			for _, s := range ss {
				if step >= len(s) {
					errs <- nil
					continue
				}
				u := s[step]
				go func() {
					res, err := booker.Book(ctx, Cluster{ID: u.id}, u.ps)
					if err == nil && len(res.Booked) != len(u.ps) {
						err = fmt.Errorf("cluster %d: booked %d of %d (%v), busy %v", u.id, len(res.Booked), len(u.ps),
							res.Dropped, res.Busy)
					}
					errs <- err
				}()
			}
			var first error
			for range ss {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			return first
		}
		return v
	}
	variants := []variant{
		booking("cuesched", 1, false),
		booking("cuesched-2", 2, false),
		booking("cuesched-4", 4, false),
		booking("cuesched-4-in-db", 4, true),
		{"floor", len(chunks), func(ctx context.Context, pool *pgxpool.Pool, unit int) error {
			return writefloor.Write(ctx, pool, chunks[unit], 500)
		}},
		{"per-frame", len(chunks), func(ctx context.Context, pool *pgxpool.Pool, unit int) error {
			return writefloor.Write(ctx, pool, chunks[unit], 1)
		}},
	}

	rates := map[string][]float64{}
	for r := range rounds {
		pools := make([]*pgxpool.Pool, len(variants))
		for i := range variants {
			pool, drop := fresh()
			defer drop()
			pools[i] = pool
		}
		if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil { // no variant pays for the copies
			t.Fatal(err)
		}
		spent := make([]time.Duration, len(variants))
		for step := 0; ; step++ {
			ran := false
			for k := range variants {
				i := (step + r + k) % len(variants)
				if step >= variants[i].units {
					continue
				}
				ran = true
				start := time.Now()
				if err := variants[i].run(ctx, pools[i], step); err != nil {
					t.Fatalf("%s: %v", variants[i].name, err)
				}
				spent[i] += time.Since(start)
			}
			if !ran {
				break
			}
		}
		for i, v := range variants {
			audittest.Clean(t, pools[i])
			rate := float64(len(ps)) / spent[i].Seconds()
			rates[v.name] = append(rates[v.name], rate)
			t.Logf("round %d %-10s %6.0f frames/s (%v)", r+1, v.name, rate, spent[i].Round(time.Millisecond))
		}
	}
	for _, name := range []string{"cuesched", "cuesched-2"} {
		var floorRatios, frameRatios []string
		var fr, pr []float64
		for r := range rounds {
			f := rates[name][r] / rates["floor"][r]
			p := rates[name][r] / rates["per-frame"][r]
			fr, pr = append(fr, f), append(pr, p)
			floorRatios, frameRatios = append(floorRatios, fmt.Sprintf("%.2f", f)), append(frameRatios, fmt.Sprintf("%.1f", p))
		}
		t.Logf("%s / write floor (500 per transaction): %s, median %.2f (target >= 0.8)", name,
			strings.Join(floorRatios, " "), median(fr))
		t.Logf("%s / one frame per transaction: %s, median %.1f (target >= 8)", name,
			strings.Join(frameRatios, " "), median(pr))
		if m := median(fr); m < 0.8 {
			t.Errorf("%s / write floor: median %.2f, below the target 0.8", name, m)
		}
		if m := median(pr); m < 8 {
			t.Errorf("%s / one frame per transaction: median %.1f, below the target 8", name, m)
		}
	}
	var gated []string
	var gr []float64
	for r := range rounds {
		g := rates["cuesched-4"][r] / rates["cuesched-4-in-db"][r]
		gr, gated = append(gr, g), append(gated, fmt.Sprintf("%.2f", g))
	}
	t.Logf("four streams, batches sharing rows waiting in the gate / in the database: %s, median %.2f",
		strings.Join(gated, " "), median(gr))
	var own []float64
	for r := range rounds {
		own = append(own, rates["floor"][r]/rates["per-frame"][r])
	}
	t.Logf("for scale, the floor itself / one frame per transaction: median %.1f", median(own))
	t.Logf("median frames/s: cuesched %.0f, cuesched-2 %.0f, floor %.0f, per-frame %.0f", median(rates["cuesched"]),
		median(rates["cuesched-2"]), median(rates["floor"]), median(rates["per-frame"]))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
